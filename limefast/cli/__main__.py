import sys

from limefast.cli.commands import main

sys.exit(main())
