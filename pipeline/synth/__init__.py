"""Synthetic corpus for buyer-intent: hand-authored seeds composed into messages and conversations.

Modules: `seeds` (loading, validation, conversation holdout), `vocab` (slot values per category),
`noise` (chat register), `messages` (labelled message table), `dialogue` (conversation flows, agent
and bot replies, orders), `writer` (streaming output), `stats` and `card` (figures of the data card),
`cli` (the `buyer-intent data` sub-commands). Nothing here runs at import time.
"""
