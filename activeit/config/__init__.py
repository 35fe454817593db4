"""Settings, each declared once (pydantic), and the command-line flags made from their fields;
:mod:`activeit.experiment` composes them into one experiment config."""
