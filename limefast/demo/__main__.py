import sys

from limefast.demo.run import main

sys.exit(main())
