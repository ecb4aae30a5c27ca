"""octodns with its Cloudflare provider against Parapet, as an operator runs it: `octodns-sync`
with the provider's stock settings but `api_url`. A first sync writes a realistic zone (an apex
ALIAS beside mail records, proxied names, automatic TTL, long TXT), a second plans nothing, a
change and a deletion apply, and the sync after them plans nothing again."""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

SYNC = pathlib.Path(sys.executable).with_name("octodns-sync")

ZONE_YAML = textwrap.dedent(
    """\
    '':
      - type: ALIAS
        value: lb.hosting.example.net.
      - type: MX
        values:
          - exchange: mx1.mail.example.net.
            preference: 10
          - exchange: mx2.mail.example.net.
            preference: 30
      - type: TXT
        values:
          - v=spf1 include:_spf.example.net ~all
          - google-site-verification=abc123def456
      - type: CAA
        values:
          - flags: 0
            tag: issue
            value: letsencrypt.org
    www:
      type: A
      values: [192.0.2.12, 192.0.2.11]
      octodns:
        cloudflare:
          proxied: true
    v6:
      type: AAAA
      ttl: 900
      values: [2001:db8::10]
    blog:
      type: CNAME
      value: blog.hosting.example.net.
    autottl:
      type: A
      value: 192.0.2.20
      octodns:
        cloudflare:
          auto-ttl: true
    dkim._domainkey:
      type: TXT
      value: v=DKIM1\\; k=rsa\\; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxyz0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789IDAQAB
    _sip._tcp:
      type: SRV
      values:
        - priority: 10
          weight: 60
          port: 5060
          target: sip1.{zone}.
    sip1:
      type: A
      value: 192.0.2.30
    sub:
      type: NS
      values: [ns1.elsewhere.example.net., ns2.elsewhere.example.net.]
    """
)


def sync(config, doit):
    args = [str(SYNC), "--config-file", str(config)]
    if doit:
        args.append("--doit")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=os.environ)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


@pytest.fixture
def octodns_zone(tmp_path, api_base, new_zone_name):
    zone = new_zone_name("octo")
    zones = tmp_path / "zones"
    zones.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            providers:
              config:
                class: octodns.provider.yaml.YamlProvider
                directory: {zones}
                default_ttl: 3600
                enforce_order: false
              cf:
                class: octodns_cloudflare.CloudflareProvider
                token: env/PARAPET_API_TOKEN
                api_url: {api}
            zones:
              {zone}.:
                sources: [config]
                targets: [cf]
            """
        ).format(zones=zones, api=api_base, zone=zone)
    )
    (zones / ("%s.yaml" % zone)).write_text(ZONE_YAML.format(zone=zone))
    return zone, config, zones / ("%s.yaml" % zone)


def records(raw, zone):
    zones = raw.result("GET", "/zones", query={"name": zone})
    assert len(zones) == 1, zones
    found = raw.result("GET", "/zones/%s/dns_records" % zones[0]["id"], query={"per_page": 100})
    return {(r["type"], r["name"], r["content"], r["proxied"]) for r in found}


def test_a_zone_syncs_then_plans_nothing_and_changes_apply(raw, octodns_zone):
    zone, config, zone_file = octodns_zone
    sync(config, doit=True)
    assert "No changes were planned" in sync(config, doit=False)
    held = records(raw, zone)
    assert ("CNAME", zone, "lb.hosting.example.net", False) in held
    assert ("MX", zone, "mx1.mail.example.net", False) in held
    assert ("A", "www." + zone, "192.0.2.12", True) in held
    assert ("NS", "sub." + zone, "ns1.elsewhere.example.net", False) in held

    # A changed address and a removed service.
    text = zone_file.read_text().replace("192.0.2.11", "192.0.2.13")
    text = text[: text.index("_sip._tcp:")] + text[text.index("sip1:") :]
    zone_file.write_text(text)
    out = sync(config, doit=True)
    assert "No changes were planned" not in out, out
    assert "No changes were planned" in sync(config, doit=False)
    held = records(raw, zone)
    assert ("A", "www." + zone, "192.0.2.13", True) in held
    assert ("A", "www." + zone, "192.0.2.11", True) not in held
    assert not any(kind == "SRV" for kind, _, _, _ in held), held
