from tftpdiag.cli.main import main

raise SystemExit(main())
