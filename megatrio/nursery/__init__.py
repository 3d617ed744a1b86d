"""The supervised task tree's mechanisms: one child's lifecycle, signals, timers, errors.

The public names are re-exported from :mod:`megatrio`.
"""

from ._child import ChildContext as ChildContext
from ._child import current_child as current_child
from ._errors import unwrap_group as unwrap_group
from ._timer import run_every as run_every
