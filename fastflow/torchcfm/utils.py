"""torchcfm.utils itself (fastflow does not reimplement it; see _borrowed)."""
from ._borrowed import borrow

borrow(__name__)
