"""Settings, each declared once (pydantic), and the command-line flags made from their fields;
:mod:`experiment.config` composes them into one experiment config."""
