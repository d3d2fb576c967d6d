"""`python -m gateway` is the `async-gateway` command."""

from gateway.cli import main

raise SystemExit(main())
