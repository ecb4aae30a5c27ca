"""certbot-dns-cloudflare against Parapet, unmodified.

Two generations of the plugin are in use and both are tested (run.sh runs this file in two
venvs):

- 5.6.0 and later build `cloudflare.Cloudflare(api_token=...)` from the official SDK (4.x or
  later). It takes no base URL from the plugin; the SDK reads CLOUDFLARE_BASE_URL.
- up to 5.5.0 (and the distributions' packages of that era) build
  `CloudFlare.CloudFlare(token=...)` from python-cloudflare 2.19.x, which reads its base URL
  from CLOUDFLARE_API_URL (or `base_url` in ~/.cloudflare.cfg).

Every check of what ended up in the zone is made through the raw HTTP API, not through the
plugin or its library.
"""

import os
import sys
import types

import pytest

from parapet_testlib import RawApi, create_dns_token

from certbot import errors as certbot_errors
from certbot_dns_cloudflare._internal import dns_cloudflare

CloudflareClient = getattr(dns_cloudflare, "_CloudflareClient")
# The legacy plugin imports python-cloudflare as `CloudFlare`; the current one the SDK.
LEGACY = hasattr(dns_cloudflare, "CloudFlare")


@pytest.fixture(autouse=True)
def library_points_at_parapet(monkeypatch, tmp_path, api_base):
    for var in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL",
                "CLOUDFLARE_API_USER_SERVICE_KEY", "CLOUDFLARE_API_CERTKEY", "CF_API_TOKEN",
                "CF_API_KEY", "CF_API_EMAIL", "CF_API_URL", "CF_API_CERTKEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", api_base)  # the official SDK
    monkeypatch.setenv("CLOUDFLARE_API_URL", api_base)  # python-cloudflare 2.x
    # python-cloudflare 2.x also reads ./.cloudflare.cfg and ~/.cloudflare.cfg: keep a
    # developer's own out of the way.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def zone(raw, new_zone_name):
    z = raw.result("POST", "/zones", body={"name": new_zone_name("certbot"), "type": "full"})
    yield z
    raw.call("DELETE", "/zones/" + z["id"])


def test_plugin_client_uses_the_base_url_from_the_environment(api_base, api_token):
    client = CloudflareClient(api_token=api_token)
    if LEGACY:
        base = client.cf._base.base_url
    else:
        base = str(client.cf.base_url)
    assert base.rstrip("/") == api_base.rstrip("/")


def txt_records(raw: RawApi, zone, name):
    """Every TXT record named `name`, straight from the API (all pages)."""
    out, page = [], 1
    while True:
        env = raw.ok("GET", "/zones/%s/dns_records" % zone["id"],
                     query={"type": "TXT", "name": name, "per_page": 50, "page": page})
        out += env["result"]
        if page >= env["result_info"]["total_pages"]:
            return out
        page += 1


def test_add_txt_record_creates_it_and_del_txt_record_removes_it(raw, api_token, zone):
    name = "_acme-challenge." + zone["name"]
    client = CloudflareClient(api_token=api_token)

    client.add_txt_record(zone["name"], name, "validation-token-1", 120)
    found = txt_records(raw, zone, name)
    assert [(r["name"], r["content"], r["ttl"]) for r in found] == [
        (name, "validation-token-1", 120)]

    client.del_txt_record(zone["name"], name, "validation-token-1")
    assert txt_records(raw, zone, name) == []


def test_challenge_for_a_subdomain_is_put_in_the_parent_zone(raw, api_token, zone):
    # certbot first asks for a zone named like the subdomain, gets none, then tries the parent.
    domain = "deep.sub." + zone["name"]
    name = "_acme-challenge." + domain
    client = CloudflareClient(api_token=api_token)

    client.add_txt_record(domain, name, "validation-token-2", 120)
    assert [r["content"] for r in txt_records(raw, zone, name)] == ["validation-token-2"]

    client.del_txt_record(domain, name, "validation-token-2")
    assert txt_records(raw, zone, name) == []


def test_adding_the_same_challenge_twice_leaves_one_record(raw, api_token, zone):
    # The second create gets 400 with code 81058: the current plugin treats that code as
    # success, the legacy one reports it as a PluginError. Either way one record remains.
    name = "_acme-challenge." + zone["name"]
    client = CloudflareClient(api_token=api_token)
    client.add_txt_record(zone["name"], name, "same-value", 120)
    if LEGACY:
        with pytest.raises(certbot_errors.PluginError):
            client.add_txt_record(zone["name"], name, "same-value", 120)
    else:
        client.add_txt_record(zone["name"], name, "same-value", 120)
    assert [r["content"] for r in txt_records(raw, zone, name)] == ["same-value"]
    client.del_txt_record(zone["name"], name, "same-value")
    assert txt_records(raw, zone, name) == []


def test_deleting_one_challenge_keeps_another_with_the_same_name(raw, api_token, zone):
    # Apex + wildcard certificates put two values under one name; cleanup of one must find
    # the right record by name *and* content.
    name = "_acme-challenge." + zone["name"]
    client = CloudflareClient(api_token=api_token)
    client.add_txt_record(zone["name"], name, "for-apex", 120)
    client.add_txt_record("*." + zone["name"], name, "for-wildcard", 120)
    assert sorted(r["content"] for r in txt_records(raw, zone, name)) == ["for-apex", "for-wildcard"]

    client.del_txt_record(zone["name"], name, "for-apex")
    assert [r["content"] for r in txt_records(raw, zone, name)] == ["for-wildcard"]
    client.del_txt_record("*." + zone["name"], name, "for-wildcard")
    assert txt_records(raw, zone, name) == []


def test_token_scoped_to_dns_edit_of_one_zone_is_enough(raw, zone, new_zone_name):
    # certbot-dns-cloudflare's documented setup: a token with only Zone > DNS > Edit on the
    # zone. It must be able to find that zone by name (zone list) and edit its records, and
    # must not see other zones.
    other = raw.result("POST", "/zones", body={"name": new_zone_name("certbot-other")})
    try:
        _, secret = create_dns_token(raw, zone["id"], name="certbot")
        client = CloudflareClient(api_token=secret)
        name = "_acme-challenge." + zone["name"]
        client.add_txt_record(zone["name"], name, "scoped-token", 120)
        assert [r["content"] for r in txt_records(raw, zone, name)] == ["scoped-token"]
        client.del_txt_record(zone["name"], name, "scoped-token")
        assert txt_records(raw, zone, name) == []

        with pytest.raises(certbot_errors.PluginError):
            client.add_txt_record(other["name"], "_acme-challenge." + other["name"], "x", 120)
        assert txt_records(raw, other, "_acme-challenge." + other["name"]) == []
    finally:
        raw.call("DELETE", "/zones/" + other["id"])


def test_unknown_domain_makes_the_plugin_fail_with_plugin_error(api_token, new_zone_name):
    domain = new_zone_name("nozone")
    client = CloudflareClient(api_token=api_token)
    with pytest.raises(certbot_errors.PluginError) as info:
        client.add_txt_record(domain, "_acme-challenge." + domain, "x", 120)
    assert "Unable to determine zone_id" in str(info.value)


def test_wrong_token_makes_the_plugin_fail_with_plugin_error(zone):
    client = CloudflareClient(api_token="not-a-real-token-0123456789")
    with pytest.raises(certbot_errors.PluginError):
        client.add_txt_record(zone["name"], "_acme-challenge." + zone["name"], "x", 120)


# --------------------------------------------------------------------------- whole plugin


def _dns01_challenge(domain):
    """A certbot annotated dns-01 challenge for `domain`, with a fresh account key."""
    import josepy as jose
    from acme import challenges, messages
    from certbot import achallenges
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    challb = messages.ChallengeBody(
        chall=challenges.DNS01(token=os.urandom(16)),
        uri="http://127.0.0.1/acme/chall/1",
        status=messages.STATUS_PENDING,
    )
    identifier = messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=domain)
    return achallenges.KeyAuthorizationAnnotatedChallenge(
        challb=challb, identifier=identifier, account_key=key)


def test_authenticator_perform_and_cleanup_with_a_credentials_file(raw, api_token, zone, tmp_path):
    """The plugin as certbot drives it: credentials INI with dns_cloudflare_api_token,
    perform() before validation, cleanup() after."""
    from certbot._internal.display import obj as display_obj

    display_obj.set_display(display_obj.FileDisplay(sys.stdout, False))
    credentials = tmp_path / "cloudflare.ini"
    fd = os.open(credentials, os.O_CREAT | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("dns_cloudflare_api_token = %s\n" % api_token)
    config = types.SimpleNamespace(
        dns_cloudflare_credentials=str(credentials),
        dns_cloudflare_propagation_seconds=0,
        noninteractive_mode=True,
    )
    auth = dns_cloudflare.Authenticator(config, "dns-cloudflare")
    achall = _dns01_challenge("www." + zone["name"])
    name = achall.validation_domain_name("www." + zone["name"])
    value = achall.validation(achall.account_key)
    assert name == "_acme-challenge.www." + zone["name"]

    responses = auth.perform([achall])
    assert len(responses) == 1
    found = txt_records(raw, zone, name)
    assert [(r["content"], r["ttl"]) for r in found] == [(value, dns_cloudflare.Authenticator.ttl)]

    auth.cleanup([achall])
    assert txt_records(raw, zone, name) == []
