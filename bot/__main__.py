"""``python -m bot`` is the same as the ``milvus-pulsar-upgrade-bot`` command."""

import sys

from bot.cli import main

sys.exit(main())
