"""CloudFormation custom resource: ml-commons + neural search on an OpenSearch domain.

Deploy (CDK): runtime python3.12, no bundling (boto3/botocore/urllib3 come with it); asset
the ``lambda/`` folder (exclude ``bulk_loader``), handlers
``search_glue.handler.on_event``, ``search_glue.handler.is_complete`` (Provider framework:
query_interval 5 s, total_timeout 10 min; Lambda timeout 2 min, which bounds every HTTP
call at 55 s) and ``search_glue.handler.watchdog`` (a scheduled rule whose constant input is
the same properties object). Give the CustomResource a service timeout (e.g. 15 min) so a
lost response never holds the stack for an hour. Grant the glue role es:ESHttp* on the
domain and iam:PassRole on ConnectorRoleArn.

Properties (CloudFormation sends every value as a string; "384" and "true" are accepted
and coerced; an invalid or unknown one fails the request naming the field, before any API
call; ServiceToken and ServiceTimeout are ignored):

  Connection to the domain
    OpenSearchUrl          str   required  https://<domain endpoint>, no path
    AuthMode               str   "sigv4"   sigv4 (service "es", the Lambda's role) | basic | none
    Region                 str   required  e.g. us-east-1; also signs the connector's calls
    Username, Password     str   ""        AuthMode basic only (local nodes)
    CaFile                 str   ""        PEM to verify TLS with (a local node's demo CA)
    RoleMappings           JSON  {}        {"<FGAC role>": ["<backend role / IAM ARN>", ...]},
                                           merged into the existing mappings with PATCH; an
                                           Update removes what only the old properties mapped
    SearchBackendRoles     JSON  []        backend roles (IAM ARNs) mapped to "<physical id>-search",
                                           a role the glue makes: search the alias and its index,
                                           ml-commons predict (a neural query embeds as the caller)
    LoaderBackendRoles     JSON  []        backend roles mapped to "<physical id>-loader": read the
                                           index mapping, bulk-write into the alias and its index
                                           (both need FGAC: AuthMode sigv4 or basic)
    ClusterSettings        JSON  {}        persistent cluster settings, applied first
  Endpoint and connector
    Name                   str   required  [a-z][a-z0-9-]{0,39}: prefix of every object name
    Flavor                 str   required  tei | custom (selects the connector request body)
    EndpointName           str   (*)       SageMaker endpoint; URL derived from Region
    EndpointUrl            str   (*)       explicit invocation URL (local endpoint); wins
    InferenceComponentName str   ""        the endpoint hosts the model as this inference
                                           component (scale-to-zero endpoints); sent as the
                                           X-Amzn-SageMaker-Inference-Component header; while
                                           it has 0 copies the smoke test is skipped and the
                                           watchdog reports the endpoint "asleep"
    Dimension              int   required  must equal the embedding length the endpoint returns
    ConnectorRoleArn       str   (**)      credential.roleArn: role ml-commons assumes to invoke
    ConnectorAccessKey     str   (**)      with ConnectorSecretKey: keys a self-managed node
    ConnectorSecretKey     str   (**)      signs with (the local endpoint verifies them)
    EndpointInstanceCount  int   1         client_config.max_connection = 16 per instance (max 256)
    ReadTimeoutSeconds     int   30        1..59 (SageMaker's limit is 60 s)
    ConnectionTimeoutSeconds int 5         1..59
    MaxRetryTimes          int   3         0..10, retries on throttling
    RetryBackoffPolicy     str   exponential_full_jitter | exponential_equal_jitter | constant
    RetryBackoffMillis     int   200
  Index and pipelines
    IndexName              str   required  an alias; the index behind it is <physical id>
    TextField              str   "text"
    EmbeddingField         str   "embedding"
    KnnEngine              str   "lucene"  lucene | faiss | nmslib (faiss/nmslib only with sigv4:
                                           a self-managed node from Maven Central lacks them)
    SpaceType              str   required  l2 | cosinesimil | innerproduct
    HnswM                  int   16
    HnswEfConstruction     int   128
    NumberOfShards         int   1
    NumberOfReplicas       int   1         updated in place
    IngestBatchSize        int   32        text_embedding batch_size (texts per endpoint call)
    HybridSearch           bool  false     adds a normalization-processor search pipeline
  (*) one of the two is required. (**) a role ARN, or both keys; not both.

Outputs (Data): ConnectorId, ModelGroupId, ModelId, PipelineName, IndexName (the alias),
ConcreteIndexName, SearchPipelineName ("" without HybridSearch), Dimension,
SearchRoleName and LoaderRoleName ("" without backend roles).

Physical id: "<Name>-<10 hex>", a hash of what defines the objects (domain, Name, Flavor,
endpoint URL, Region, Dimension, index name, fields, engine, space type, HNSW parameters,
shards). Each object is named after it. An Update that changes only client_config,
connector credentials, replicas, batch size, hybrid search, role mappings or cluster
settings keeps the id (a connector change undeploys, updates, redeploys). Any other change
builds new objects under a new id and moves the alias; CloudFormation's follow-up Delete of
the old id removes the old ones (a rollback's Delete of the new id hands the alias back to
the newest remaining index). Documents are not copied: re-ingest after a model change.

Failures: every exception becomes FAILED with "<step>: <METHOD> <path> -> HTTP <status>:
<body>" (403s add a hint naming the missing grant), after removing what that request
created (never objects it found and adopted). Delete treats 404 as done and follows
search pipeline -> index -> ingest pipeline -> undeploy -> model -> connector -> group
-> search and loader roles (and their mappings).
"""
