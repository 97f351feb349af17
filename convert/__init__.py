"""baize_convert: LLaMA + LoRA (Hugging Face layout) to GGUF, streamed tensor by tensor.

Installed under the import name ``baize_convert`` (the source folder is ``convert/``).
"""

from baize_tui.errors import OperationFailed as ConvertFailed
from baize_tui.errors import UserError as ConvertError

__all__ = ["ConvertError", "ConvertFailed"]
