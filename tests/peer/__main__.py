import sys

from tests.peer.run import main

sys.exit(main())
