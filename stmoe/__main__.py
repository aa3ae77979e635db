"""`python -m stmoe ...` runs the `stmoe` command line (the same as the console script)."""


def _main() -> None:
    try:  # installed: the repository's cli/ folder is the package physvid_cli
        from physvid_cli.stmoe_cmd import main
    except ImportError:  # a checkout run from its root
        from cli.stmoe_cmd import main
    main()


if __name__ == "__main__":  # DataLoader workers under spawn import this module as __mp_main__: don't re-run the CLI
    _main()
