"""``limefast serve``: explanations as a service.

The core (``Scheduler``, ``BatchQueue``) merges the rounds of concurrent explanations into
shared model batches and knows nothing of HTTP: embed it in a server of your own. ``app``
is the FastAPI app of KServe's V1 data plane on top of it (``pip install 'limefast[serve]'``).
"""

from limefast.serve.batching import BatchQueue, Cancelled, Ticket
from limefast.serve.options import ExplainOptions
from limefast.serve.scheduler import (
    Admission,
    Job,
    ModelError,
    Overloaded,
    Result,
    Scheduler,
)

__all__ = ["Admission", "BatchQueue", "Cancelled", "ExplainOptions", "Job", "ModelError",
           "Overloaded", "Result", "Scheduler", "Ticket"]
