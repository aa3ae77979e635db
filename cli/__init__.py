"""Command-line front ends. Installed as the package `physvid_cli` (see pyproject.toml); inside the repository it is
importable as `cli`. Commands only parse options and call the libraries (`physvid`, `stmoe`)."""
