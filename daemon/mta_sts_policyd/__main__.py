"""`python -m mta_sts_policyd`: the same command line as the `mta-sts-policyd` script."""

from mta_sts_policyd.cli.main import main

raise SystemExit(main())
