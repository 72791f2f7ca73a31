import sys

from podlab.launcher import main

sys.exit(main())
