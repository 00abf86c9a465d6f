"""``python -m claude_exporter``: the same as the ``claude-exporter`` command."""

import sys

from claude_exporter.cli import main

sys.exit(main())
