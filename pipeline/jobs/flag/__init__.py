"""`buyer-intent flag`: find lost shoppers who had wanted to buy and write the nudge list (催拍).

Shop back-ends export chats as flat message tables that need not be sorted by conversation, and large
ones do not fit in memory, so the job runs in three phases, each checkpointed in a work directory keyed
by a hash of the inputs' paths, sizes and mtimes, the model and the settings (a killed run rerun with the
same arguments resumes; anything changed starts afresh):

1. partition: read the chats in chunks, reject malformed rows with a reason, and append valid rows to N
   Parquet shards by hash(shop_id, conversation_id): every conversation lands whole in one shard.
2. shards: worker processes sort, score and decide one shard at a time (`pipeline.nudge`, the same code
   the service decides with); each finished shard is checkpointed.
3. merge: candidates of all shards, one nudge per buyer/shop/window, a deterministic order, and the
   output, `<out>.rejected.csv` and `<out>.summary.json`, each written atomically.

Rows in = rows used + rows rejected, and the summary says so.

Modules: `files` (what the phases share), `partition`, `orders`, `shards`, `merge` and `job` (`run_flag`).
"""

from pipeline.jobs.flag.files import OUTPUT_COLUMNS, FlagError
from pipeline.jobs.flag.job import run_flag
from pipeline.jobs.flag.merge import output_set_problems

__all__ = ["OUTPUT_COLUMNS", "FlagError", "output_set_problems", "run_flag"]
