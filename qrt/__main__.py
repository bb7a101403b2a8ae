from qrt.cli import main

raise SystemExit(main())
