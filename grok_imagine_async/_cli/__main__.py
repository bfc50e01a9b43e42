"""``python -m grok_imagine_async._cli``: the same as the ``grok-imagine`` command."""

import sys

from . import main

sys.exit(main())
