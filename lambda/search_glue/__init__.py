"""CloudFormation custom resource: ml-commons + neural search on an OpenSearch domain.

Deploy: stacks/components/neural_search_glue.py (runtime, handlers ``search_glue.handler.on_event``,
``.is_complete`` and ``.watchdog``, timeouts, the Provider framework's polling, the service
timeout, grants); those numbers live there only. The asset needs nothing beyond the runtime's
boto3/botocore/urllib3.

Properties: ``properties.GlueProperties`` defines every one (name, type, default, meaning);
the table at the end of this docstring is rendered from it. CloudFormation sends every value
as a string; "384" and "true" are accepted and coerced; an invalid or unknown one fails the
request naming the field, before any API call; ServiceToken and ServiceTimeout are ignored.

Outputs (Data): ConnectorId, ModelGroupId, ModelId (the passage model: the ingest
pipeline's), QueryModelId (the query model of an asymmetric model, else ModelId),
PipelineName, IndexName (the alias), ConcreteIndexName, SearchPipelineName (the index's
default search pipeline: neural_query_enricher with the query model, plus the hybrid
normalization with HybridSearch), Dimension, SearchRoleName and LoaderRoleName ("" without
backend roles).

Query vs passage: QueryPrefix and PassagePrefix (the catalog's) differ for an asymmetric
model; then a second connector and model ("<physical id>-query") embed queries: the custom
flavor's request names the kind (prompt_name), TEI's carries the prefix (painless pre_process).

Physical id: "<Name>-<10 hex>", a hash of what defines the objects (domain, Name, Flavor,
endpoint URL, Region, Dimension, prefixes, index name, fields, engine, space type, HNSW
parameters, shards). Each object is named after it. An Update that changes only client_config,
connector credentials, replicas, batch size, hybrid search, role mappings or cluster
settings keeps the id (a connector change undeploys, updates, redeploys). Any other change
builds new objects under a new id; when the alias stands on an older index, its documents
are re-embedded into the new one (``_reindex`` through the new ingest pipeline), counted,
and only then does the alias move (reembed.py). CloudFormation's follow-up Delete of the
old id removes the old objects but keeps the old index, retired, for
RetiredIndexHours (the watchdog deletes it after); a rollback hands the alias back
to the retired index (re-embedding what the new one received meanwhile). When the
change moved to a new SageMaker endpoint (the old one CloudFormation kept), that Delete
retires the old endpoint and its inference component once no connector invokes them
(serving.py; the watchdog finishes what SageMaker could not delete yet).

No Delete removes documents that may exist nowhere else: it deletes an index only when it
holds no documents. Any other index it keeps, retired ("<IndexName>-retired", writes
blocked, pipelines detached, _meta.semsearch.retired.reason "delete"), and the watchdog
never deletes such an index: a person does. That covers an IndexName change (nothing is
re-embedded into the new alias) and a stack deletion that keeps the domain (retain_data).
A Create of the same physical id later adopts the kept index and it serves again.

Failures: every exception becomes FAILED with "<step>: <METHOD> <path> -> HTTP <status>:
<body>" (403s add a hint naming the missing grant), after removing what that request
created (never objects it found and adopted). Delete treats 404 as done and follows
search pipeline -> index (when empty, else kept) -> ingest pipeline -> undeploy -> model -> connector -> group
-> search and loader roles (and their mappings).
"""

from .properties import reference

__doc__ = f"{__doc__}\nProperties (rendered from properties.GlueProperties):\n\n{reference()}"
