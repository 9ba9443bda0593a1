import sys

from proxycast.cli import main

sys.exit(main())
