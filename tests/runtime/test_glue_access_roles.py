"""The least-privilege FGAC roles (issue 9, defects 8 and 14) without a node: properties
and role bodies. tests/e2e/test_glue_access_roles.py proves on the real node that these
bodies allow what the searchers and the loader do, and nothing more."""

from __future__ import annotations

import json

import pytest
from search_glue import steps
from search_glue.properties import PropertyError, parse

from tests.runtime.test_glue_properties import AWS, LOCAL

SEARCHERS = ["arn:aws:iam::123456789012:role/app", "arn:aws:iam::123456789012:role/analyst"]
LOADER = "arn:aws:iam::123456789012:role/loader"


def test_backend_roles_are_read_from_json_text_or_lists():
    props = parse({**AWS, "SearchBackendRoles": json.dumps(SEARCHERS), "LoaderBackendRoles": [LOADER, LOADER]})
    assert props.search_backend_roles == tuple(SEARCHERS)
    assert props.loader_backend_roles == (LOADER,)  # duplicates once
    assert parse(AWS).search_backend_roles == parse(AWS).loader_backend_roles == ()


@pytest.mark.parametrize(("value", "expected"), [
    ("[oops", "SearchBackendRoles: not valid JSON"),
    ('{"a": 1}', "SearchBackendRoles: expected a list of backend role names"),
    ('["", "x"]', "SearchBackendRoles: expected a list of backend role names"),
])
def test_bad_backend_roles_are_named(value, expected):
    with pytest.raises(PropertyError) as info:
        parse({**AWS, "SearchBackendRoles": value})
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_backend_roles_need_fgac():
    with pytest.raises(PropertyError, match="LoaderBackendRoles: needs fine-grained access control"):
        parse({**LOCAL, "LoaderBackendRoles": [LOADER]})


def test_backend_roles_do_not_change_the_physical_id():
    assert parse({**AWS, "SearchBackendRoles": SEARCHERS}).physical_id == parse(AWS).physical_id


def test_roles_reach_only_the_alias_and_this_versions_index():
    props = parse({**AWS, "SearchBackendRoles": SEARCHERS, "LoaderBackendRoles": [LOADER]})
    names = steps.Names(props.physical_id, props.index_name)
    roles = steps.access_roles(props, names)
    search_name, search, search_backend = roles["search_role"]
    loader_name, loader, loader_backend = roles["loader_role"]
    assert (search_name, loader_name) == (f"{props.physical_id}-search", f"{props.physical_id}-loader")
    assert (search_backend, loader_backend) == (tuple(SEARCHERS), (LOADER,))
    # Exact action names, no action groups and no wildcards: what each role may do is read here.
    assert search["cluster_permissions"] == ["cluster:admin/opensearch/ml/predict"]
    assert search["index_permissions"] == [{"index_patterns": ["documents", props.physical_id],
                                            "allowed_actions": ["indices:data/read/search"]}]
    # The loader reads which model version embeds for the index (bulk_loader.serving) before it writes.
    assert loader["cluster_permissions"] == ["indices:data/write/bulk", "cluster:admin/ingest/pipeline/get",
                                             "cluster:admin/opensearch/ml/models/get",
                                             "cluster:admin/opensearch/ml/connectors/get"]
    assert loader["index_permissions"] == [{"index_patterns": ["documents", props.physical_id], "allowed_actions": [
        "indices:admin/mappings/get", "indices:monitor/settings/get", "indices:data/write/bulk[s]",
        "indices:data/write/index"]}]
