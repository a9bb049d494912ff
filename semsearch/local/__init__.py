"""A real OpenSearch node and the local semantic-search stack, on this machine.

``opensearch``  fetches (Maven), installs, starts and stops a single OpenSearch node.
``client``      a small HTTP client for it (basic auth, the node's own CA).
``ingest``      bulk-loads ``{"id", "text"}`` JSONL through the ingest pipeline.
``stack``       ``semsearch local up|status|down``: node + endpoint + the glue + ingest.
"""
