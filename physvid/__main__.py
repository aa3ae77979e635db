"""`python -m physvid ...` runs the `physvid` command line (the same as the console script)."""


def _main() -> None:
    try:  # installed: the repository's cli/ folder is the package physvid_cli
        from physvid_cli.physvid_cmd import main
    except ImportError:  # a checkout run from its root
        from cli.physvid_cmd import main
    main()


if __name__ == "__main__":  # spawned worker processes import this module as __mp_main__ and must not re-run the CLI
    _main()
