"""Settings, each declared once (pydantic); the experiment config that composes them; the flags made from them."""
