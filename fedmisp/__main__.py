from fedmisp.node.cli import main

raise SystemExit(main())
