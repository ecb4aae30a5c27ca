"""The official Cloudflare Python SDK (`cloudflare` on PyPI, Stainless-generated) against Parapet.

Nothing here is Parapet-specific except the base URL: every call is the one a script written
for api.cloudflare.com makes. run.sh runs this file under cloudflare 4.x and again under the
5.x that certbot-dns-cloudflare pulls in; both are written to be valid for either.

A note on the SDK's models: a DNS record response is a union of per-type models
(ARecord, MXRecord, ...). The SDK picks the matching variant only if the whole response
validates against it (every required field present with the right type); otherwise it
silently falls back to loosely building the first variant, ARecord. So asserting the class
name of a returned record checks that the server's JSON satisfies the SDK's schema.
"""

import datetime
import subprocess

import cloudflare
import pydantic
import pytest
from cloudflare.types.custom_certificates import CustomCertificate
from cloudflare.types.dns.record_response import RecordResponse
from cloudflare.types.zones import Zone

from parapet_testlib import collect, create_dns_token, zone_file_comments, zone_file_records

NAMESERVERS = ["ns1.parapet.test", "ns2.parapet.test"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cf(api_base, api_token):
    # max_retries=0: a 409/429/5xx must show up as a failure here, not be retried away.
    client = cloudflare.Cloudflare(
        api_token=api_token, base_url=api_base, max_retries=0, timeout=30
    )
    yield client
    client.close()


def _delete_zone_quietly(cf, zone_id):
    try:
        cf.zones.delete(zone_id=zone_id)
    except cloudflare.NotFoundError:
        pass


@pytest.fixture
def make_zone(cf, new_zone_name):
    created = []

    def make(prefix="sdk"):
        zone = cf.zones.create(account={}, name=new_zone_name(prefix), type="full")
        created.append(zone.id)
        return zone

    yield make
    for zone_id in created:
        _delete_zone_quietly(cf, zone_id)


@pytest.fixture
def zone(make_zone):
    return make_zone()


def create(cf, zone, **kwargs):
    """Creates a record; ttl defaults to 1 ('automatic'), which SDK 5.x requires."""
    kwargs.setdefault("ttl", 1)
    return cf.dns.records.create(zone_id=zone.id, **kwargs)


def ids(records):
    return {r.id for r in records}


def error_codes(exc):
    body = exc.body if isinstance(exc.body, dict) else {}
    return [e.get("code") for e in body.get("errors", [])]


def as_record_model(raw_result):
    """The SDK's record union validated strictly against a raw JSON result."""
    return pydantic.TypeAdapter(RecordResponse).validate_python(raw_result)


# --------------------------------------------------------------------------- tokens


def test_token_verify_reports_the_token_active(cf):
    verified = cf.user.tokens.verify()
    assert verified.status == "active"
    assert verified.id


def test_token_list_auto_pagination_ends(cf, raw, zone):
    # Iterating a list walks page=2, 3, ... until a page comes back empty; a server that
    # ignores `page` makes every such loop endless.
    token_id, _ = create_dns_token(raw, zone.id, name="listed")
    tokens = collect(cf.user.tokens.list(), limit=200)
    assert token_id in {t.id for t in tokens}
    assert len(tokens) == len({t.id for t in tokens})


def test_client_configured_by_environment_variables_alone(monkeypatch, api_base, api_token):
    # The SDK reads CLOUDFLARE_BASE_URL and CLOUDFLARE_API_TOKEN when given no arguments;
    # this is how clients that build their own Cloudflare() (e.g. certbot) are redirected.
    for var in ("CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL", "CLOUDFLARE_API_USER_SERVICE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", api_base)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", api_token)
    with cloudflare.Cloudflare(max_retries=0) as client:
        assert client.user.tokens.verify().status == "active"


def test_wrong_token_raises_authentication_error(api_base):
    with cloudflare.Cloudflare(
        api_token="not-a-real-token-0123456789", base_url=api_base, max_retries=0
    ) as client:
        with pytest.raises(cloudflare.AuthenticationError) as info:
            client.user.tokens.verify()
    assert info.value.status_code == 401
    assert 1000 in error_codes(info.value)


def test_wrong_token_cannot_list_zones(api_base):
    with cloudflare.Cloudflare(
        api_token="not-a-real-token-0123456789", base_url=api_base, max_retries=0
    ) as client:
        with pytest.raises(cloudflare.AuthenticationError):
            next(iter(client.zones.list()))


# --------------------------------------------------------------------------- zones


def test_zone_create_returns_zone_matching_the_sdk_schema(cf, raw, new_zone_name):
    name = new_zone_name("zc")
    zone = cf.zones.create(account={}, name=name, type="full")
    try:
        assert zone.name == name
        assert zone.id
        assert zone.name_servers == NAMESERVERS
        assert zone.status in ("initializing", "pending", "active")
        assert zone.type == "full"
        assert isinstance(zone.created_on, datetime.datetime)
        assert zone.created_on.tzinfo is not None
        # The raw JSON must satisfy every required field of the SDK's Zone model.
        strict = Zone.model_validate(raw.result("GET", "/zones/" + zone.id))
        assert strict.id == zone.id and strict.name == name

        fetched = cf.zones.get(zone_id=zone.id)
        assert (fetched.id, fetched.name, fetched.name_servers) == (zone.id, name, NAMESERVERS)
    finally:
        _delete_zone_quietly(cf, zone.id)


def test_zone_create_accepts_the_account_id_from_accounts_list(cf, new_zone_name):
    # What a script written for Cloudflare does: look up its account, create the zone in it.
    accounts = collect(cf.accounts.list(), limit=50)
    assert len(accounts) >= 1
    account_id = accounts[0].id
    zone = cf.zones.create(account={"id": account_id}, name=new_zone_name("acct"))
    try:
        assert zone.account.id == account_id
    finally:
        _delete_zone_quietly(cf, zone.id)


def test_duplicate_zone_is_rejected_with_code_1061(cf, zone):
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.zones.create(account={}, name=zone.name, type="full")
    assert 1061 in error_codes(info.value)


def test_activation_check_makes_zone_active_in_auto_mode(cf, zone):
    checked = cf.zones.activation_check.trigger(zone_id=zone.id)
    assert checked.id == zone.id
    fetched = cf.zones.get(zone_id=zone.id)
    assert fetched.status == "active"
    assert fetched.activated_on is not None


def test_zone_list_by_name_returns_only_that_zone(cf, make_zone):
    zone = make_zone("byname")
    other = make_zone("other")
    found = collect(cf.zones.list(name=zone.name))
    assert [z.id for z in found] == [zone.id]
    assert other.id not in ids(found)
    # A name that is not a zone (e.g. a subdomain of one) matches nothing, without error:
    # certbot walks from the longest candidate name down this way.
    assert collect(cf.zones.list(name="sub." + zone.name)) == []
    assert collect(cf.zones.list(name="absent-" + zone.name)) == []


def test_zone_list_paginates_explicitly_and_automatically(cf, raw, make_zone):
    made = {make_zone("page").id for _ in range(3)}

    first = cf.zones.list(per_page=1, page=1)
    assert len(first.result) == 1
    assert first.result_info.page == 1 and first.result_info.per_page == 1
    info = raw.ok("GET", "/zones", query={"per_page": 1, "page": 1})["result_info"]
    assert info["page"] == 1 and info["per_page"] == 1 and info["count"] == 1
    assert info["total_count"] >= 3 and info["total_pages"] == info["total_count"]

    every = collect(cf.zones.list(per_page=1))
    assert made <= ids(every)
    assert len(every) == len(ids(every)), "a zone appeared on two pages"
    assert len(every) == info["total_count"]


def test_zone_edit_pauses_the_zone(cf, zone):
    edited = cf.zones.edit(zone_id=zone.id, paused=True)
    assert edited.paused is True
    assert cf.zones.get(zone_id=zone.id).paused is True
    assert cf.zones.edit(zone_id=zone.id, paused=False).paused is False


def test_zone_delete_removes_the_zone(cf, make_zone):
    zone = make_zone("del")
    deleted = cf.zones.delete(zone_id=zone.id)
    assert deleted.id == zone.id
    with pytest.raises(cloudflare.NotFoundError):
        cf.zones.get(zone_id=zone.id)
    assert collect(cf.zones.list(name=zone.name)) == []


def test_unknown_zone_raises_not_found(cf):
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.zones.get(zone_id="0" * 32)
    assert info.value.status_code == 404


# --------------------------------------------------------------------------- record CRUD

RECORD_CASES = [
    pytest.param(
        "ARecord",
        lambda z: dict(type="A", name="www." + z, content="192.0.2.10", proxied=True, comment="web"),
        lambda r, z: (r.name, r.content, r.proxied, r.proxiable, r.comment)
        == ("www." + z, "192.0.2.10", True, True, "web"),
        id="A-proxied",
    ),
    pytest.param(
        "AAAARecord",
        lambda z: dict(type="AAAA", name="v6." + z, content="2001:db8::10", ttl=300),
        lambda r, z: (r.name, r.content, r.proxied, r.ttl) == ("v6." + z, "2001:db8::10", False, 300),
        id="AAAA",
    ),
    pytest.param(
        "CNAMERecord",
        lambda z: dict(type="CNAME", name="blog." + z, content="www." + z, ttl=3600),
        lambda r, z: (r.name, r.content, r.ttl, r.proxiable) == ("blog." + z, "www." + z, 3600, True),
        id="CNAME",
    ),
    pytest.param(
        "MXRecord",
        lambda z: dict(type="MX", name=z, content="mail." + z, priority=10, ttl=300),
        lambda r, z: (r.name, r.content, r.priority, r.proxied, r.proxiable)
        == (z, "mail." + z, 10, False, False),
        id="MX-priority",
    ),
    pytest.param(
        "TXTRecord",
        lambda z: dict(type="TXT", name="_txt." + z, content="v=spf1 -all"),
        lambda r, z: (r.name, r.content, r.proxiable) == ("_txt." + z, "v=spf1 -all", False),
        id="TXT",
    ),
    pytest.param(
        "SRVRecord",
        lambda z: dict(
            type="SRV",
            name="_sip._tcp." + z,
            data={"priority": 10, "weight": 5, "port": 5060, "target": "sip." + z},
            ttl=300,
        ),
        lambda r, z: r.name == "_sip._tcp." + z
        and (r.data.priority, r.data.weight, r.data.port, r.data.target) == (10, 5, 5060, "sip." + z),
        id="SRV-data",
    ),
    pytest.param(
        "CAARecord",
        lambda z: dict(type="CAA", name=z, data={"flags": 0, "tag": "issue", "value": "letsencrypt.org"}),
        lambda r, z: r.name == z and (r.data.flags, r.data.tag, r.data.value) == (0, "issue", "letsencrypt.org"),
        id="CAA-data",
    ),
]


@pytest.mark.parametrize("model, params, check", RECORD_CASES)
def test_create_record_returns_the_typed_model(cf, raw, zone, model, params, check):
    created = create(cf, zone, **params(zone.name))
    assert type(created).__name__ == model, "response does not validate as %s" % model
    assert check(created, zone.name)
    assert isinstance(created.created_on, datetime.datetime)
    assert isinstance(created.modified_on, datetime.datetime)

    fetched = cf.dns.records.get(dns_record_id=created.id, zone_id=zone.id)
    assert type(fetched).__name__ == model
    assert fetched.id == created.id
    assert check(fetched, zone.name)

    strict = as_record_model(raw.result("GET", "/zones/%s/dns_records/%s" % (zone.id, created.id)))
    assert type(strict).__name__ == model


def test_relative_and_apex_names_are_returned_fully_qualified(cf, zone):
    rel = create(cf, zone, type="A", name="rel", content="192.0.2.20")
    assert rel.name == "rel." + zone.name
    apex = create(cf, zone, type="TXT", name="@", content="apex-text")
    assert apex.name == zone.name


def test_update_put_overwrites_the_whole_record(cf, zone):
    rec = create(cf, zone, type="A", name="put." + zone.name, content="192.0.2.30",
                 proxied=True, comment="old comment", ttl=1)
    updated = cf.dns.records.update(
        dns_record_id=rec.id, zone_id=zone.id, type="A", name="put." + zone.name,
        content="192.0.2.31", ttl=600,
    )
    assert updated.id == rec.id
    assert (updated.content, updated.ttl) == ("192.0.2.31", 600)
    # PUT replaces: what was not sent goes back to its default.
    assert updated.proxied is False
    assert not updated.comment
    fetched = cf.dns.records.get(dns_record_id=rec.id, zone_id=zone.id)
    assert (fetched.content, fetched.ttl, fetched.proxied) == ("192.0.2.31", 600, False)
    assert not fetched.comment


def test_edit_patch_keeps_fields_it_does_not_send(cf, raw, zone):
    rec = create(cf, zone, type="A", name="patch." + zone.name, content="192.0.2.40",
                 proxied=True, comment="keep me", ttl=1)
    # The SDK's edit() always sends name and type (and ttl in 5.x); content, proxied and
    # comment are left out and must survive.
    edited = cf.dns.records.edit(
        dns_record_id=rec.id, zone_id=zone.id, type="A", name="patch." + zone.name, ttl=120
    )
    assert type(edited).__name__ == "ARecord"
    assert (edited.content, edited.proxied, edited.comment, edited.ttl) == (
        "192.0.2.40", True, "keep me", 120)

    # A bare PATCH with one field, as Cloudflare allows, changes only that field.
    path = "/zones/%s/dns_records/%s" % (zone.id, rec.id)
    after = raw.result("PATCH", path, body={"comment": "changed"})
    assert (after["comment"], after["content"], after["proxied"], after["ttl"]) == (
        "changed", "192.0.2.40", True, 120)
    fetched = cf.dns.records.get(dns_record_id=rec.id, zone_id=zone.id)
    assert (fetched.comment, fetched.content) == ("changed", "192.0.2.40")


def test_delete_record_then_get_raises_not_found(cf, zone):
    rec = create(cf, zone, type="TXT", name="gone." + zone.name, content="bye")
    deleted = cf.dns.records.delete(dns_record_id=rec.id, zone_id=zone.id)
    assert deleted.id == rec.id
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.dns.records.get(dns_record_id=rec.id, zone_id=zone.id)
    assert info.value.status_code == 404
    assert 81044 in error_codes(info.value)
    with pytest.raises(cloudflare.NotFoundError):
        cf.dns.records.delete(dns_record_id=rec.id, zone_id=zone.id)


def test_duplicate_record_raises_bad_request_81058(cf, zone):
    params = dict(type="A", name="dup." + zone.name, content="192.0.2.50")
    first = create(cf, zone, **params)
    with pytest.raises(cloudflare.BadRequestError) as info:
        create(cf, zone, **params)
    assert info.value.status_code == 400
    assert 81058 in error_codes(info.value)
    assert 81058 in [e.code for e in info.value.errors]
    listed = collect(cf.dns.records.list(zone_id=zone.id, type="A", name={"exact": "dup." + zone.name}))
    assert [r.id for r in listed] == [first.id]


def test_record_in_unknown_zone_raises_not_found(cf):
    with pytest.raises(cloudflare.NotFoundError):
        cf.dns.records.create(zone_id="0" * 32, type="A", name="x.example.com",
                              content="192.0.2.1", ttl=1)


# --------------------------------------------------------------------------- listing


@pytest.fixture
def populated(cf, zone):
    z = zone.name
    recs = {
        "a_alpha": create(cf, zone, type="A", name="alpha." + z, content="192.0.2.1", proxied=True),
        "a_bravo": create(cf, zone, type="A", name="bravo." + z, content="192.0.2.2", proxied=False),
        "aaaa_alpha": create(cf, zone, type="AAAA", name="alpha." + z, content="2001:db8::1"),
        "txt_alpha": create(cf, zone, type="TXT", name="alpha." + z, content="alpha-text"),
        "mx_apex": create(cf, zone, type="MX", name=z, content="mail." + z, priority=10),
        "cname_charlie": create(cf, zone, type="CNAME", name="charlie." + z, content="alpha." + z),
    }
    return zone, {k: v.id for k, v in recs.items()}


def listed(cf, zone, **filters):
    return ids(collect(cf.dns.records.list(zone_id=zone.id, **filters)))


def test_list_returns_every_created_record(cf, populated):
    zone, r = populated
    assert set(r.values()) <= listed(cf, zone)


def test_list_filters_by_type(cf, populated):
    zone, r = populated
    assert listed(cf, zone, type="A") == {r["a_alpha"], r["a_bravo"]}
    assert listed(cf, zone, type="MX") == {r["mx_apex"]}


def test_list_filters_by_name_exact_plain_and_contains(cf, populated):
    zone, r = populated
    alpha = {r["a_alpha"], r["aaaa_alpha"], r["txt_alpha"]}
    assert listed(cf, zone, name={"exact": "alpha." + zone.name}) == alpha
    assert listed(cf, zone, extra_query={"name": "alpha." + zone.name}) == alpha
    assert listed(cf, zone, name={"exact": "ALPHA." + zone.name.upper()}) == alpha
    assert listed(cf, zone, name={"contains": "bravo"}) == {r["a_bravo"]}


def test_list_filters_by_content_exact_and_plain(cf, populated):
    zone, r = populated
    assert listed(cf, zone, content={"exact": "192.0.2.1"}) == {r["a_alpha"]}
    assert listed(cf, zone, extra_query={"content": "192.0.2.2"}) == {r["a_bravo"]}
    assert listed(cf, zone, content={"exact": "alpha." + zone.name}) == {r["cname_charlie"]}
    assert listed(cf, zone, content={"exact": "alpha-text"}) == {r["txt_alpha"]}


def test_list_filters_by_proxied(cf, populated):
    zone, r = populated
    assert listed(cf, zone, proxied=True) == {r["a_alpha"]}
    assert listed(cf, zone, type="A", proxied=False) == {r["a_bravo"]}


def test_list_match_all_intersects_and_match_any_unites(cf, populated):
    zone, r = populated
    bravo = {"exact": "bravo." + zone.name}
    assert listed(cf, zone, type="AAAA", name=bravo) == set()
    assert listed(cf, zone, type="AAAA", name=bravo, match="all") == set()
    assert listed(cf, zone, type="AAAA", name=bravo, match="any") == {r["aaaa_alpha"], r["a_bravo"]}
    assert listed(cf, zone, type="A", name={"exact": "alpha." + zone.name}) == {r["a_alpha"]}


def test_list_orders_by_field_and_direction(cf, populated):
    zone, _ = populated
    by_name = [x.name for x in collect(cf.dns.records.list(zone_id=zone.id, order="name"))]
    assert by_name == sorted(by_name)
    desc = [x.name for x in collect(
        cf.dns.records.list(zone_id=zone.id, order="name", direction="desc"))]
    assert desc == sorted(desc, reverse=True)
    by_type = [x.type for x in collect(cf.dns.records.list(zone_id=zone.id, order="type"))]
    assert by_type == sorted(by_type)


def test_list_pages_explicitly_and_auto_paginates(cf, raw, zone):
    made = {create(cf, zone, type="TXT", name="p%d.%s" % (i, zone.name), content="page-%d" % i).id
            for i in range(7)}

    first = cf.dns.records.list(zone_id=zone.id, type="TXT", per_page=3, page=1)
    assert len(first.result) == 3
    assert (first.result_info.page, first.result_info.per_page) == (1, 3)
    assert first.has_next_page()
    second = first.get_next_page()
    assert second.result_info.page == 2 and len(second.result) == 3
    third = cf.dns.records.list(zone_id=zone.id, type="TXT", per_page=3, page=3)
    assert len(third.result) == 1
    # A page past the end is an empty success: the SDK's auto-pagination stops on it.
    beyond = cf.dns.records.list(zone_id=zone.id, type="TXT", per_page=3, page=4)
    assert beyond.result == []
    assert not beyond.has_next_page()
    pages = ids(first.result) | ids(second.result) | ids(third.result)
    assert pages == made

    query = {"type": "TXT", "per_page": 3, "page": 1}
    info = raw.ok("GET", "/zones/%s/dns_records" % zone.id, query=query)["result_info"]
    assert info == {"page": 1, "per_page": 3, "count": 3, "total_count": 7, "total_pages": 3}
    query["page"] = 4
    env = raw.ok("GET", "/zones/%s/dns_records" % zone.id, query=query)
    assert env["result"] == [] and env["result_info"]["count"] == 0

    every = collect(cf.dns.records.list(zone_id=zone.id, type="TXT", per_page=3))
    assert len(every) == 7 and ids(every) == made
    sizes = [len(p.result) for p in first.iter_pages() if p.result]
    assert sizes == [3, 3, 1]


# --------------------------------------------------------------------------- batch


def test_batch_applies_deletes_patches_puts_and_posts(cf, zone):
    z = zone.name
    gone = create(cf, zone, type="A", name="gone." + z, content="192.0.2.61")
    patched = create(cf, zone, type="A", name="patched." + z, content="192.0.2.62", comment="keep")
    put = create(cf, zone, type="A", name="put." + z, content="192.0.2.63", comment="drop")

    result = cf.dns.records.batch(
        zone_id=zone.id,
        deletes=[{"id": gone.id}],
        patches=[{"id": patched.id, "content": "192.0.2.72"}],
        puts=[{"id": put.id, "type": "A", "name": "put." + z, "content": "192.0.2.73", "ttl": 1}],
        posts=[{"type": "A", "name": "new." + z, "content": "192.0.2.74", "ttl": 1}],
    )
    assert [d.id for d in result.deletes] == [gone.id]
    assert [(p.id, p.content, p.comment) for p in result.patches] == [
        (patched.id, "192.0.2.72", "keep")]
    assert [(p.id, p.content) for p in result.puts] == [(put.id, "192.0.2.73")]
    assert not result.puts[0].comment
    assert [(p.name, p.content) for p in result.posts] == [("new." + z, "192.0.2.74")]
    assert type(result.posts[0]).__name__ == "ARecord"

    with pytest.raises(cloudflare.NotFoundError):
        cf.dns.records.get(dns_record_id=gone.id, zone_id=zone.id)
    assert cf.dns.records.get(dns_record_id=patched.id, zone_id=zone.id).content == "192.0.2.72"
    assert listed(cf, zone, name={"exact": "new." + z}) == {result.posts[0].id}


def test_batch_with_a_failing_operation_changes_nothing(cf, zone):
    z = zone.name
    keep = create(cf, zone, type="A", name="keep." + z, content="192.0.2.81")
    existing = create(cf, zone, type="A", name="exists." + z, content="192.0.2.82")
    with pytest.raises(cloudflare.BadRequestError):
        cf.dns.records.batch(
            zone_id=zone.id,
            deletes=[{"id": keep.id}],
            posts=[{"type": "A", "name": existing.name, "content": "192.0.2.82", "ttl": 1}],
        )
    assert cf.dns.records.get(dns_record_id=keep.id, zone_id=zone.id).id == keep.id


# --------------------------------------------------------------------------- export / import


def test_export_returns_bind_zone_file_with_the_records(cf, zone):
    z = zone.name
    for case in RECORD_CASES:
        create(cf, zone, **case.values[1](z))
    text = cf.dns.records.export(zone_id=zone.id)
    assert isinstance(text, str)
    rrs = zone_file_records(text)
    fq = lambda n: n + "."  # noqa: E731
    assert (fq("www." + z), "A", "192.0.2.10") in rrs
    assert (fq("v6." + z), "AAAA", "2001:db8::10") in rrs
    assert (fq("blog." + z), "CNAME", fq("www." + z)) in rrs
    assert (fq(z), "MX", "10 " + fq("mail." + z)) in rrs
    assert (fq("_txt." + z), "TXT", '"v=spf1 -all"') in rrs
    assert (fq("_sip._tcp." + z), "SRV", "10 5 5060 " + fq("sip." + z)) in rrs
    assert (fq(z), "CAA", '0 issue "letsencrypt.org"') in rrs


def test_export_marks_proxied_records_like_cloudflare(cf, zone):
    create(cf, zone, type="A", name="px." + zone.name, content="192.0.2.90", proxied=True)
    create(cf, zone, type="A", name="dns." + zone.name, content="192.0.2.91", proxied=False)
    comments = zone_file_comments(cf.dns.records.export(zone_id=zone.id))
    tagged = [line for line, comment in comments if "cf-proxied:true" in comment]
    assert any("192.0.2.90" in line for line in tagged)
    assert not any("192.0.2.91" in line for line in tagged)


def test_import_zone_file_creates_its_records(cf, zone, tmp_path):
    z = zone.name
    path = tmp_path / "bind.txt"
    path.write_text(
        "$ORIGIN %s.\n"
        "$TTL 3600\n"
        "imp-a      IN A     192.0.2.150\n"
        "imp-aaaa   300 IN AAAA 2001:db8::150\n"
        "imp-cname  IN CNAME imp-a\n"
        "@          IN MX    20 mx.%s.\n"
        "imp-txt    IN TXT   \"hello world\"\n"
        "_sip._udp  IN SRV   10 5 5060 imp-a\n" % (z, z)
    )
    result = cf.dns.records.import_(zone_id=zone.id, file=path.read_text(), proxied="false")
    assert (result.recs_added, result.total_records_parsed) == (6, 6)

    def one(name, rtype):
        found = collect(cf.dns.records.list(zone_id=zone.id, type=rtype, name={"exact": name}))
        assert len(found) == 1, (name, rtype, found)
        return found[0]

    a = one("imp-a." + z, "A")
    assert (a.content, a.ttl, a.proxied) == ("192.0.2.150", 3600, False)
    assert one("imp-aaaa." + z, "AAAA").ttl == 300
    assert one("imp-cname." + z, "CNAME").content == "imp-a." + z
    mx = one(z, "MX")
    assert (mx.content, mx.priority) == ("mx." + z, 20)
    assert one("imp-txt." + z, "TXT").content.strip('"') == "hello world"
    srv = one("_sip._udp." + z, "SRV")
    assert type(srv).__name__ == "SRVRecord"
    assert (srv.data.port, srv.data.weight, srv.data.target) == (5060, 5, "imp-a." + z)


def test_import_with_proxied_true_proxies_only_proxiable_records(cf, zone):
    z = zone.name
    text = "web.%s. 300 IN A 192.0.2.160\ninfo.%s. 300 IN TXT \"x\"\n" % (z, z)
    result = cf.dns.records.import_(zone_id=zone.id, file=text, proxied="true")
    assert result.recs_added == 2
    web = collect(cf.dns.records.list(zone_id=zone.id, name={"exact": "web." + z}))
    info = collect(cf.dns.records.list(zone_id=zone.id, name={"exact": "info." + z}))
    assert [r.proxied for r in web] == [True]
    assert [r.proxied for r in info] == [False]


def test_export_then_import_restores_deleted_records(cf, zone):
    z = zone.name
    originals = [
        create(cf, zone, type="A", name="rt." + z, content="192.0.2.170", proxied=True),
        create(cf, zone, type="MX", name=z, content="mx." + z, priority=5),
        create(cf, zone, type="TXT", name="rt." + z, content="round trip"),
        create(cf, zone, type="CAA", name=z, data={"flags": 0, "tag": "issue", "value": "ca.test"}),
    ]
    exported = cf.dns.records.export(zone_id=zone.id)
    for rec in originals:
        cf.dns.records.delete(dns_record_id=rec.id, zone_id=zone.id)

    cf.dns.records.import_(zone_id=zone.id, file=exported)
    restored = collect(cf.dns.records.list(zone_id=zone.id))
    by_key = {(r.type, r.name): r for r in restored}
    assert by_key[("A", "rt." + z)].content == "192.0.2.170"
    assert by_key[("A", "rt." + z)].proxied is True, "cf-proxied tag not honoured on import"
    assert (by_key[("MX", z)].content, by_key[("MX", z)].priority) == ("mx." + z, 5)
    assert by_key[("TXT", "rt." + z)].content.strip('"') == "round trip"
    assert by_key[("CAA", z)].data.value == "ca.test"
    assert zone_file_records(cf.dns.records.export(zone_id=zone.id)) >= {
        rr for rr in zone_file_records(exported) if rr[1] in ("A", "MX", "TXT", "CAA")
    }


# --------------------------------------------------------------------------- TLS


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _self_signed(tmp_path, host):
    """A certificate and key for `host` (PEM), as an operator makes one with openssl."""
    _openssl(
        tmp_path, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "30", "-subj", "/CN=" + host, "-addext",
        "subjectAltName=DNS:" + host, "-keyout", "key.pem", "-out", "cert.pem",
    )
    return (tmp_path / "cert.pem").read_text(), (tmp_path / "key.pem").read_text()


def test_custom_certificate_lifecycle_through_the_sdk(cf, raw, zone, tmp_path):
    host = "www." + zone.name
    cert, key = _self_signed(tmp_path, host)
    created = cf.custom_certificates.create(
        zone_id=zone.id, certificate=cert, private_key=key, bundle_method="ubiquitous",
        type="sni_custom",
    )
    assert (created.hosts, created.status, created.zone_id) == ([host], "active", zone.id)
    assert isinstance(created.expires_on, datetime.datetime)
    strict = pydantic.TypeAdapter(CustomCertificate).validate_python(
        raw.result("GET", "/zones/%s/custom_certificates/%s" % (zone.id, created.id))
    )
    assert strict.id == created.id
    assert [c.id for c in collect(cf.custom_certificates.list(zone_id=zone.id))] == [created.id]
    edited = cf.custom_certificates.edit(
        custom_certificate_id=created.id, zone_id=zone.id, bundle_method="force"
    )
    assert edited.bundle_method == "force"
    cf.custom_certificates.delete(custom_certificate_id=created.id, zone_id=zone.id)
    with pytest.raises(cloudflare.NotFoundError):
        cf.custom_certificates.get(custom_certificate_id=created.id, zone_id=zone.id)


def test_unusable_certificates_are_bad_requests_with_cloudflares_codes(cf, zone, tmp_path):
    cert, _ = _self_signed(tmp_path, "www." + zone.name)
    _, other_key = _self_signed(tmp_path, "www." + zone.name)
    # 1002 an unusable certificate, 2106 an unusable key, 2200 a key that is not the leaf's.
    for certificate, key, codes in [("garbage", "garbage", {1002, 2106}), (cert, other_key, {2200})]:
        with pytest.raises(cloudflare.BadRequestError) as e:
            cf.custom_certificates.create(zone_id=zone.id, certificate=certificate, private_key=key)
        assert codes <= set(error_codes(e.value)), e.value.body


def test_ssl_settings_are_edited_through_the_sdk(cf, zone):
    for setting, value in [("ssl", "strict"), ("min_tls_version", "1.2"), ("always_use_https", "on")]:
        edited = cf.zones.settings.edit(setting_id=setting, zone_id=zone.id, value=value)
        assert (edited.id, edited.value) == (setting, value)
        assert cf.zones.settings.get(setting_id=setting, zone_id=zone.id).value == value
    with pytest.raises(cloudflare.BadRequestError) as e:
        cf.zones.settings.edit(setting_id="ssl", zone_id=zone.id, value="sometimes")
    assert 1007 in error_codes(e.value)


def test_origin_ca_signs_a_csr_for_the_zones_names(cf, zone, tmp_path):
    _openssl(
        tmp_path, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-subj", "/CN=origin", "-keyout", "origin.key", "-out", "origin.csr",
    )
    csr = (tmp_path / "origin.csr").read_text()
    hosts = [zone.name, "*." + zone.name]
    created = cf.origin_ca_certificates.create(
        csr=csr, hostnames=hosts, request_type="origin-ecc", requested_validity=90
    )
    assert created.certificate.startswith("-----BEGIN CERTIFICATE-----")
    assert sorted(created.hostnames) == sorted(hosts)
    got = cf.origin_ca_certificates.get(certificate_id=created.id)
    assert got.certificate == created.certificate
    revoked = cf.origin_ca_certificates.delete(certificate_id=created.id)
    assert revoked.id == created.id and revoked.revoked_at is not None
    again = cf.origin_ca_certificates.delete(certificate_id=created.id)
    assert again.revoked_at == revoked.revoked_at
