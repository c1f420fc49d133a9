def _main() -> int:
    from fedmisp.node.cli import main
    return main()


# Processes that multiprocessing starts with "spawn" (the row workers) import this module as
# __mp_main__: the CLI (aiohttp, the API, configuration) is imported only when it is run.
if __name__ == "__main__":
    raise SystemExit(_main())
