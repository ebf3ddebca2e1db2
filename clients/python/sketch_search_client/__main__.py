"""`python -m sketch_search_client` is the `sketch-search` CLI."""

import sys

from .cli import main

sys.exit(main())
