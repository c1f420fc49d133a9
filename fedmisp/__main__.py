from fedmisp.node.cli import main

if __name__ == "__main__":  # import paths started by multiprocessing (spawn) must not run the CLI
    raise SystemExit(main())
