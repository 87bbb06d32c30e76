"""itsm_core: fine-tune and honestly evaluate text-embedding models for ITSM incidents.

All logic of the workbench lives in this package; notebooks and the ``itsm`` CLI only
call into it.
"""

from itsm_core.core.errors import ItsmError

__all__ = ["ItsmError", "__version__"]
__version__ = "0.1.0"
