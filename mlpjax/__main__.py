import sys

from mlpjax.cli import main

sys.exit(main())
