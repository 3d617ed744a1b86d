"""Configuration: the frozen schema, value parsers, and loading from TOML, the environment and
command-line flags."""
