"""`python -m local_aws`: the local AWS server (see local_aws/__init__.py)."""

import sys

from local_aws.app import main

sys.exit(main())
