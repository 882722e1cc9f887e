from rmfproxy.cli import main

raise SystemExit(main())
