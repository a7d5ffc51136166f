from tftpdiag.cli import main

raise SystemExit(main())
