"""fedmisp.model.values: MISP attribute values validated and normalised as MISP does.

Expected values come from MISP's own behaviour (app/Lib/Tools/AttributeValidationTool.php and its
test, app/Test/AttributeValidationToolTest.php, whose vectors are reused here), not from the module.
"""
from __future__ import annotations

import json
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains, urls

from fedmisp.model import values
from fedmisp.model.values import MAX_VALUE_BYTES, ValueFormatError, normalise

DESCRIBE_TYPES: list[str] = json.loads(
    (resources.files("pymisp") / "data" / "describeTypes.json").read_text("utf-8")
)["result"]["types"]

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Digest lengths in hexadecimal characters (MISP's HASH_HEX_LENGTH, and the algorithms' sizes).
HEX_LENGTHS = {
    "md5": 32, "imphash": 32, "sha1": 40, "git-commit-id": 40, "pehash": 40, "authentihash": 64,
    "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128, "sha512/224": 56, "sha512/256": 64,
    "sha3-224": 56, "sha3-256": 64, "sha3-384": 96, "sha3-512": 128, "ja3-fingerprint-md5": 32,
    "hassh-md5": 32, "hasshserver-md5": 32, "jarm-fingerprint": 62, "dom-hash": 32,
    "x509-fingerprint-md5": 32, "x509-fingerprint-sha1": 40, "x509-fingerprint-sha256": 64,
}
FILENAME_HASHES = ["md5", "sha1", "sha256", "imphash", "pehash", "authentihash", "sha224",
                   "sha384", "sha512", "sha512/224", "sha512/256", "sha3-224", "sha3-256",
                   "sha3-384", "sha3-512"]
TLSH = "b2317c38fac0333c8ff7d3ff31fcf3b7fb3f9a3ef3bf3c880cfc43ebf97f3cc73fbfc"
TLSH_T1 = "t1fdd4e000b6a1c034f1f612f849b6a3a4b53f7ea1677481cf12d916ea4a79af1ed31317"
SSDEEP = "96:s4Ud1Lj96tHHlZDrwciQmA+4uy1I0G4HYuL8N3TzS8QsO/wqWXLcMSx:sF1LjEtHHlZDrJzrhuyZvHYm8tKp/RWO"

# One valid value and its key(s) for every type MISP validates strictly.
SAMPLES: dict[str, tuple[str, tuple[str, ...]]] = {
    **{t: ("AB" * (n // 2) + "C" * (n % 2), (("ab" * (n // 2) + "c" * (n % 2)),))
       for t, n in HEX_LENGTHS.items()},
    **{f"filename|{h}": (f"Evil.EXE|{'F' * HEX_LENGTHS[h]}", ("Evil.EXE", "f" * HEX_LENGTHS[h]))
       for h in FILENAME_HASHES},
    "cdhash": ("A" * 40, ("a" * 40,)),
    "tlsh": (TLSH.upper(), (TLSH,)),
    "telfhash": ("A" * 70, ("a" * 70,)),
    "vhash": ("015056655D155Az2e!z", ("015056655d155az2e!z",)),
    "ssdeep": (SSDEEP, (SSDEEP,)),
    "impfuzzy": ("48:AbC:dEf", ("48:AbC:dEf",)),
    "ssh-fingerprint": ("MD5:7B:e5:6f:a7:f4:f9:81:62:5c:e3:1f:bf:8b:57:6c:5a",
                        ("7b:e5:6f:a7:f4:f9:81:62:5c:e3:1f:bf:8b:57:6c:5a",)),
    "ip-src": ("10.0.0.1", ("10.0.0.1",)),
    "ip-dst": ("2001:DB8:0:0::1", ("2001:db8::1",)),
    "port": ("443", ("443",)),
    "domain": ("Example.COM", ("example.com",)),
    "hostname": ("WWW.Example.com", ("www.example.com",)),
    "onion-address": ("expyuzz4wqqyqhjn.onion", ("expyuzz4wqqyqhjn.onion",)),
    "mac-address": ("AA-BB-CC-DD-EE-FF", ("aa:bb:cc:dd:ee:ff",)),
    "mac-eui-64": ("0011.2233.4455.6677", ("00:11:22:33:44:55:66:77",)),
    "url": ("HTTP://Example.COM/Path", ("http://example.com/Path",)),
    "uri": ("/Admin/Login.php", ("/Admin/Login.php",)),
    "link": ("https://Example.com/Report", ("https://example.com/Report",)),
    "AS": ("AS13335", ("13335",)),
    "datetime": ("2024-05-01T13:45:00+02:00", ("2024-05-01T11:45:00.000000+0000",)),
    "boolean": ("true", ("1",)),
    "integer": ("-042", ("-42",)),
    "counter": ("007", ("7",)),
    "size-in-bytes": ("1024", ("1024",)),
    "float": ("-1.5e3", ("-1.5e3",)),
    "bank-account-nr": ("12345678", ("12345678",)),
    "aba-rtn": ("021000021", ("021000021",)),
    "cc-number": ("4111 1111-1111 1111", ("4111111111111111",)),
    "bin": ("411111", ("411111",)),
    "iban": ("de89 3704 0044 0532 0130 00", ("DE89370400440532013000",)),
    "bic": ("deut-de-ff", ("DEUTDEFF",)),
    "btc": ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",)),
    "dash": ("XpESxaUmonkq8RaLLp46Brx2K39ggQe226", ("XpESxaUmonkq8RaLLp46Brx2K39ggQe226",)),
    "xmr": ("4AdUndXHHZ6cfufTMvppY6JwXNouMBzSkbLYfpAV5Usx",
            ("4AdUndXHHZ6cfufTMvppY6JwXNouMBzSkbLYfpAV5Usx",)),
    "phone-number": ("0044 (0)20 7946 0000", ("+442079460000",)),
    "prtn": ("+1-555-0100", ("+15550100",)),
    "whois-registrant-phone": ("+33 1 23 45 67 89", ("+33123456789",)),
    "vulnerability": ("cve-2021-44228", ("CVE-2021-44228",)),
    "weakness": ("cwe-79", ("CWE-79",)),
    "http-method": ("post", ("POST",)),
    "hex": ("deadBEEF", ("DEADBEEF",)),
    "windows-service-name": ("EvilSvc", ("EvilSvc",)),
    "windows-service-displayname": ("Evil Service", ("Evil Service",)),
    "cortex": ('{"summary": {"taxonomies": []}}', ('{"summary": {"taxonomies": []}}',)),
    "uuid": ("5C0F1E5A-8C2D-4F6B-9E3A-1B2C3D4E5F60", ("5c0f1e5a-8c2d-4f6b-9e3a-1b2c3d4e5f60",)),
    "anonymised": ("Some Anonymised VALUE", ("some anonymised value",)),
    "email": ("Alice@Example.com", ("alice@example.com",)),
    "email-src": ("Alice[at]Example[.]com", ("alice@example.com",)),
    "email-dst": ("BOB@EXAMPLE.COM", ("bob@example.com",)),
    "target-email": ("Carol@Example.com", ("carol@example.com",)),
    "whois-registrant-email": ("Dave@Example.com", ("dave@example.com",)),
    "eppn": ("Erin@Example.edu", ("Erin@Example.edu",)),
    "dns-soa-email": ("hostmaster@Example.com", ("hostmaster@Example.com",)),
    "jabber-id": ("Frank@Jabber.org/Home", ("Frank@Jabber.org/Home",)),
    "domain|ip": ("EXAMPLE.COM|127.0.0.1", ("example.com", "127.0.0.1")),
    "ip-src|port": ("10.0.0.1:8080", ("10.0.0.1", "8080")),
    "ip-dst|port": ("[2001:db8::1]:443", ("2001:db8::1", "443")),
    "hostname|port": ("WWW.Example.com:443", ("www.example.com", "443")),
    "regkey|value": (r"HKLM\Software\Run|C:\Evil.exe", (r"HKLM\Software\Run", r"C:\Evil.exe")),
    "filename|ssdeep": (f"ahoj.txt|{SSDEEP}", ("ahoj.txt", SSDEEP)),
    "filename|tlsh": (f"cmd.exe|{TLSH_T1.upper()}", ("cmd.exe", TLSH_T1)),
    "filename|vhash": ("a.exe|015056655D155Az2e!z", ("a.exe", "015056655d155az2e!z")),
    "filename|impfuzzy": ("a.exe|48:AbC:dEf", ("a.exe", "48:AbC:dEf")),
    "malware-sample": (f"Sample.EXE|{MD5.upper()}", ("Sample.EXE", MD5)),
}

# Free text on one line: MISP refuses a new line character in these.
SINGLE_LINE = {
    "target-user", "campaign-name", "campaign-id", "threat-actor", "target-machine", "target-org",
    "target-location", "target-external", "email-subject", "malware-type", "user-agent", "regkey",
    "filename", "pdb", "windows-scheduled-task", "whois-registrant-name", "whois-registrant-org",
    "whois-registrar", "whois-creation-date", "date-of-birth", "place-of-birth", "gender",
    "passport-number", "passport-country", "passport-expiration", "redress-number", "nationality",
    "visa-number", "issue-date-of-the-visa", "primary-residence", "country-of-residence",
    "special-service-request", "frequent-flyer-number", "travel-details", "payment-details",
    "place-port-of-original-embarkation", "place-port-of-clearance",
    "place-port-of-onward-foreign-destination", "passenger-name-record-locator-number",
    "email-dst-display-name", "email-src-display-name", "email-reply-to", "email-x-mailer",
    "email-mime-boundary", "email-thread-index", "email-message-id", "github-username",
    "github-repository", "github-organisation", "twitter-id", "dkim", "dkim-signature",
    "favicon-mmh3", "chrome-extension-id", "mobile-application-id", "azure-application-id",
    "named pipe", "edge-extension-id",
}
# Free text, new lines allowed: MISP accepts any non-empty value.
MULTI_LINE = {
    "mutex", "process-state", "snort", "suricata", "bro", "zeek", "community-id",
    "pattern-in-file", "pattern-in-traffic", "pattern-in-memory", "filename-pattern",
    "pgp-public-key", "pgp-private-key", "yara", "stix2-pattern", "sigma", "gene", "kusto-query",
    "mime-type", "identity-card-number", "cookie", "attachment", "comment", "text", "other", "cpe",
    "email-attachment", "email-body", "email-header", "first-name", "middle-name", "last-name",
    "full-name",
}
HASH_TYPES = sorted(HEX_LENGTHS)
IP_TYPES = ["ip-src", "ip-dst"]


def rejects(type_: str, value: str) -> str:
    with pytest.raises(ValueFormatError) as info:
        normalise(type_, value)
    return str(info.value)


# --- the type table ---------------------------------------------------------------------------

def test_describe_types_has_194_types():
    assert len(DESCRIBE_TYPES) == 194 == len(set(DESCRIBE_TYPES))


def test_every_describe_type_is_dispatched():
    assert set(values._DISPATCH) == set(DESCRIBE_TYPES)
    assert set(values.TYPES) == set(DESCRIBE_TYPES)


def test_no_type_falls_back_silently():
    # the free-text fallback exists for types a newer pymisp may add; none may use it today
    assert values.FALLBACK_TYPES == frozenset()


def test_this_test_file_classifies_every_type():
    assert set(SAMPLES) | SINGLE_LINE | MULTI_LINE == set(DESCRIBE_TYPES)
    assert not (set(SAMPLES) & (SINGLE_LINE | MULTI_LINE)) and not (SINGLE_LINE & MULTI_LINE)


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_sample_value_is_accepted_and_normalised(type_):
    value, expected = SAMPLES[type_]
    assert normalise(type_, value) == expected


@pytest.mark.parametrize("type_", DESCRIBE_TYPES)
def test_composite_types_return_two_keys_simple_types_one(type_):
    value = SAMPLES[type_][0] if type_ in SAMPLES else "some text"
    composite = "|" in type_ or type_ == "malware-sample"
    assert len(normalise(type_, value)) == (2 if composite else 1)


# --- rules for every type ---------------------------------------------------------------------

@pytest.mark.parametrize("type_", DESCRIBE_TYPES)
@pytest.mark.parametrize("value", ["", "   ", "\t\r\n", "\x00", "\u00a0\u2003"])
def test_empty_value_is_rejected_for_every_type(type_, value):
    message = rejects(type_, value)
    assert message.startswith("value is empty") and type_ in message


@pytest.mark.parametrize("type_", ["nope", "", "MD5", "ip_dst", None, 42, ["md5"]])
def test_unknown_type_is_rejected(type_):
    message = rejects(type_, MD5)  # type: ignore[arg-type]
    assert message.startswith("unknown type")


@pytest.mark.parametrize("value", [None, 42, b"d41d8cd98f00b204e9800998ecf8427e", ["x"]])
def test_non_string_value_is_rejected(value):
    assert "md5" in rejects("md5", value)  # type: ignore[arg-type]


def test_max_value_bytes_is_mysql_text_column():
    assert MAX_VALUE_BYTES == 65_535


@pytest.mark.parametrize("type_", ["text", "comment", "yara", "url"])
def test_value_over_max_bytes_is_rejected(type_):
    assert normalise(type_, "a" * MAX_VALUE_BYTES) == ("a" * MAX_VALUE_BYTES,)
    message = rejects(type_, "a" * (MAX_VALUE_BYTES + 1))
    assert str(MAX_VALUE_BYTES) in message and type_ in message


def test_value_limit_counts_utf8_bytes():
    assert normalise("text", "\u00e9" * 32_767)  # 65,534 bytes
    assert str(MAX_VALUE_BYTES) in rejects("text", "\u00e9" * 32_768)  # 65,536 bytes
    assert str(MAX_VALUE_BYTES) in rejects("text", "\U0001f600" * 16_384)  # 65,536 bytes


def test_value_limit_applies_after_stripping():
    assert normalise("text", "  " + "a" * MAX_VALUE_BYTES + "\n")


@pytest.mark.parametrize("type_", ["text", "filename", "domain", "md5"])
def test_lone_surrogate_is_rejected(type_):
    assert type_ in rejects(type_, "abc\ud800")


def test_strip_set_is_unicode_white_space_and_nul():
    white = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(values._STRIP) == white | {"\x00"}


@pytest.mark.parametrize("type_,value,expected", [
    ("md5", f"  {MD5}\n", (MD5,)),
    ("domain", "\u00a0example.com\t", ("example.com",)),
    ("text", "\x00 hello \x00", ("hello",)),
    ("filename", "\x0b evil.exe \r\n", ("evil.exe",)),
    ("ip-dst", " 10.0.0.1 ", ("10.0.0.1",)),
])
def test_surrounding_whitespace_is_stripped(type_, value, expected):
    assert normalise(type_, value) == expected


# --- hashes -----------------------------------------------------------------------------------

def test_md5_is_lowercased():
    assert normalise("md5", MD5.upper()) == (MD5,)


@pytest.mark.parametrize("type_", HASH_TYPES)
def test_hash_accepts_exactly_its_length(type_):
    n = HEX_LENGTHS[type_]
    assert normalise(type_, "A" * n) == ("a" * n,)
    assert str(n) in rejects(type_, "a" * (n - 1))
    assert str(n) in rejects(type_, "a" * (n + 1))


@pytest.mark.parametrize("type_", HASH_TYPES)
def test_hash_rejects_non_hex(type_):
    n = HEX_LENGTHS[type_]
    message = rejects(type_, "g" + "a" * (n - 1))
    assert "hexadecimal" in message and type_ in message


def test_hash_error_names_what_is_accepted():
    assert rejects("md5", "abc") == "expected 32 hexadecimal characters (md5)"


def test_md5_rejects_sha1():
    # AttributeValidationToolTest: filename|md5 refuses a sha1
    rejects("filename|md5", f"cmd.exe|{SHA1}")


@pytest.mark.parametrize("type_", ["x509-fingerprint-md5", "x509-fingerprint-sha1",
                                   "x509-fingerprint-sha256"])
def test_x509_fingerprint_colons_are_dropped(type_):
    n = HEX_LENGTHS[type_]
    assert normalise(type_, ":".join(["AB"] * (n // 2))) == ("ab" * (n // 2),)


def test_git_commit_id_is_lowercased():
    assert normalise("git-commit-id", SHA1.upper()) == (SHA1,)


@pytest.mark.parametrize("value", [TLSH, TLSH_T1, TLSH.upper(), TLSH_T1.upper()])
def test_tlsh_accepts_t1_prefix_and_is_lowercased(value):
    assert normalise("tlsh", value) == (value.lower(),)


@pytest.mark.parametrize("value", ["a" * 35, "t1" + "a" * 34, "x" * 40, "t1"])
def test_tlsh_rejects_short_or_non_hex(value):
    assert "tlsh" in rejects("tlsh", value)


def test_telfhash_accepts_70_or_72_characters():
    assert normalise("telfhash", "T1" + "A" * 70) == ("t1" + "a" * 70,)
    assert normalise("telfhash", "a" * 70) == ("a" * 70,)
    rejects("telfhash", "a" * 71)


def test_cdhash_accepts_40_or_more_hex():
    assert normalise("cdhash", "A" * 64) == ("a" * 64,)
    rejects("cdhash", "a" * 39)


@pytest.mark.parametrize("value", [
    SSDEEP,
    "384:EWo4X1WaPW9ZWhWzLo+lWpct/fWbkWsWIwW0/S7dZhgG8:EWo4X1WmW9ZWhWH/WpchfWgWsWTWtf8",
    "6144:3wSQSlrBHFjOvwYAU/Fsgi/2WDg5+YaNk5xcHrYw+Zg+XrZsGEREYRGAFU25ttR/:ctM7E0L4q",
])
def test_ssdeep_keeps_case(value):
    assert normalise("ssdeep", value) == (value,)


@pytest.mark.parametrize("value", [
    "768:+OFu8Q3w6QzfR5Jni6SQD7qSFDs6P93/q0XIc/UB5EPABWX\n\n:RFu8QAFzffJui79f13/AnB5EPAkX",
    "abc:def:ghi", "96:abc", "96:a-b:c",
])
def test_ssdeep_rejects_bad_format(value):
    assert "blocksize" in rejects("ssdeep", value)


def test_impfuzzy_needs_number_and_three_parts():
    assert normalise("impfuzzy", "12:Ab:Cd") == ("12:Ab:Cd",)
    rejects("impfuzzy", "x:Ab:Cd")
    rejects("impfuzzy", "12:Ab")


@pytest.mark.parametrize("value,expected", [
    ("7b:e5:6f:a7:f4:f9:81:62:5c:e3:1f:bf:8b:57:6c:5a",
     "7b:e5:6f:a7:f4:f9:81:62:5c:e3:1f:bf:8b:57:6c:5a"),
    ("MD5:7B:E5:6F:A7:F4:F9:81:62:5C:E3:1F:BF:8B:57:6C:5A",
     "7b:e5:6f:a7:f4:f9:81:62:5c:e3:1f:bf:8b:57:6c:5a"),
    ("SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE",
     "SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE"),
    ("SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE=",
     "SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE"),
])
def test_ssh_fingerprint_md5_and_sha256_forms(value, expected):
    assert normalise("ssh-fingerprint", value) == (expected,)


@pytest.mark.parametrize("value", ["SHA256:abc", "sha256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE",
                                   "MD5:7b:e5", "SHA256:" + "!" * 43])
def test_ssh_fingerprint_rejects_bad_forms(value):
    rejects("ssh-fingerprint", value)


# --- IP addresses, ports ----------------------------------------------------------------------

@pytest.mark.parametrize("type_", IP_TYPES)
@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1", "127.0.0.1"),
    ("127.0.0.1/32", "127.0.0.1"),  # MISP drops a /32
    ("127.0.0.1/31", "127.0.0.1/31"),
    ("::1", "::1"),
    ("::1/128", "::1"),  # and a /128
    ("0.0.0.0/0", "0.0.0.0/0"),
])
def test_ip_dst_accepts_addresses_and_networks(type_, value, expected):
    assert normalise(type_, value) == (expected,)


@pytest.mark.parametrize("type_", IP_TYPES)
@pytest.mark.parametrize("value", [
    # AttributeValidationToolTest's invalid vectors
    "127", "127.0.0.", "127.0.0.1/", "127.0.0.1/32/1", "127.0.0.1/128", "::1/257", "::1/128/1",
    # and more
    "example.com", "256.1.1.1", "01.2.3.4", "1.2.3.4.5", "fe80::1%eth0", "[::1]", "1.2.3.4 5",
    "1.2.3.4/-1", "1.2.3.4/a", "::1/0129", "1:2:3:4:5:6:7:8:9", "12345::1", ":::",
])
def test_ip_dst_rejects_non_ip(type_, value):
    message = rejects(type_, value)
    assert type_ in message and ("IPv4" in message or "prefix" in message)


@pytest.mark.parametrize("value,expected", [
    ("1234:0fd2:5621:0001:0089:0000:0000:4500", "1234:fd2:5621:1:89::4500"),  # MISP test vector
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  # first of equal runs
    ("0:0:0:0:0:0:0:0", "::"),
    ("fe80:0:0:0:0:0:0:1/64", "fe80::1/64"),
    ("1234:0fd2:5621:0001:0089:0000:0000:4500/128", "1234:fd2:5621:1:89::4500"),
])
def test_ipv6_is_compressed(value, expected):
    assert normalise("ip-dst", value) == (expected,)


@pytest.mark.parametrize("value,expected", [
    ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
    ("0:0:0:0:0:ffff:0102:0304", "::ffff:1.2.3.4"),
])
def test_ipv4_mapped_ipv6_keeps_dotted_quad(value, expected):
    # MISP compresses with inet_ntop, which writes the IPv4 tail of a mapped address dotted
    assert normalise("ip-src", value) == (expected,)


@pytest.mark.parametrize("value,expected", [
    ("10.1.2.3/24", "10.1.2.3/24"),
    ("2001:db8::1/32", "2001:db8::1/32"),
])
def test_ip_network_with_host_bits_is_kept_as_given(value, expected):
    # MISP does not mask the host bits away
    assert normalise("ip-dst", value) == (expected,)


@pytest.mark.parametrize("value,expected", [
    ("10.0.0.0/08", "10.0.0.0/8"), ("10.0.0.1/032", "10.0.0.1"), ("::1/0064", "::1/64"),
])
def test_ip_prefix_leading_zeros_are_dropped(value, expected):
    assert normalise("ip-dst", value) == (expected,)


@pytest.mark.parametrize("value", ["10[.]0[.]0[.]1", "10(.)0(.)0(.)1", "10{.}0{.}0{.}1",
                                   "10[dot]0[dot]0[dot]1", "10(dot)0.0[.]1"])
def test_ip_is_refanged(value):
    assert normalise("ip-dst", value) == ("10.0.0.1",)


@pytest.mark.parametrize("value,expected", [("1", "1"), ("80", "80"), ("65535", "65535"),
                                            ("0080", "80")])
def test_port_accepts_1_to_65535(value, expected):
    assert normalise("port", value) == (expected,)


@pytest.mark.parametrize("value", ["0", "000", "65536", "-80", "+80", "80a", "8 0", "\u0668\u0660",
                                   "99999999999999999999999"])
def test_port_rejects_out_of_range_or_non_digits(value):
    assert "65535" in rejects("port", value)


# --- composites -------------------------------------------------------------------------------

@pytest.mark.parametrize("type_", ["ip-src|port", "ip-dst|port"])
@pytest.mark.parametrize("value,expected", [
    ("1.2.3.4|80", ("1.2.3.4", "80")),
    ("1.2.3.4:80", ("1.2.3.4", "80")),
    ("1.2.3.4/32|80", ("1.2.3.4", "80")),
    ("1.2.3[.]4:080", ("1.2.3.4", "80")),
    ("2001:db8::1|80", ("2001:db8::1", "80")),
    ("[2001:db8::1]:80", ("2001:db8::1", "80")),
    ("[::1]:80", ("::1", "80")),
    ("2001:db8::1.80", ("2001:db8::1", "80")),
    ("2001:db8::1 port 80", ("2001:db8::1", "80")),
    ("2001:db8::1p80", ("2001:db8::1", "80")),
    ("2001:db8::1#80", ("2001:db8::1", "80")),
    ("2001:db8::1:80", ("2001:db8::1", "80")),  # ambiguous; MISP takes the last group as port
    ("1234:0fd2:5621:0001:0089:0000:0000:4500|80", ("1234:fd2:5621:1:89::4500", "80")),
    ("1234:0fd2:5621:0001:0089:0000:0000:4500/128|80", ("1234:fd2:5621:1:89::4500", "80")),
    ("::ffff:1.2.3.4 port 443", ("::ffff:1.2.3.4", "443")),
    (" 1.2.3.4 | 80 ", ("1.2.3.4", "80")),
])
def test_composite_ip_port_splits(type_, value, expected):
    assert normalise(type_, value) == expected


@pytest.mark.parametrize("type_", ["ip-src|port", "ip-dst|port"])
@pytest.mark.parametrize("value", [
    "1.2.3.4", "1.2.3.4|", "|80", "1.2.3.4|0", "1.2.3.4|65536", "1.2.3.4/24|80",
    "1234:0fd2:5621:0001:0089:0000:0000:4500/127|80", "1.2.3.4|80|90", "1.2.3.4:80:90",
    "example.com|80", "[::1]80", "[::1]:80:90",
])
def test_composite_ip_port_rejects(type_, value):
    assert type_ in rejects(type_, value)


@pytest.mark.parametrize("value,expected", [
    ("example.com|127.0.0.1", ("example.com", "127.0.0.1")),
    ("example.com|::1", ("example.com", "::1")),
    ("EXAMPLE.COM|127.0.0.1", ("example.com", "127.0.0.1")),
    ("example.com|1234:0fd2:5621:0001:0089:0000:0000:4500",
     ("example.com", "1234:fd2:5621:1:89::4500")),
    ("example.com|1234:0fd2:5621:0001:0089:0000:0000:4500/128",
     ("example.com", "1234:fd2:5621:1:89::4500")),
    ("h\u00e1\u010dky\u010d\u00e1rky.cz|127.0.0.1", ("xn--hkyrky-ptac70bc.cz", "127.0.0.1")),
    ("evil[.]com|10[.]0.0.1", ("evil.com", "10.0.0.1")),
])
def test_composite_domain_ip_splits(value, expected):
    assert normalise("domain|ip", value) == expected


@pytest.mark.parametrize("value", ["example.com|127", "example.com|1", "example.com|10.0.0.0/8",
                                   "127.0.0.1|example.com", "example.com"])
def test_composite_domain_ip_rejects(value):
    rejects("domain|ip", value)


@pytest.mark.parametrize("value,expected", [
    ("WWW.Example.com:443", ("www.example.com", "443")),
    ("www.example.com|8080", ("www.example.com", "8080")),
])
def test_composite_hostname_port_splits(value, expected):
    assert normalise("hostname|port", value) == expected


@pytest.mark.parametrize("value", ["www.example.com", "www.example.com:0", "a:b:c", "localhost:80"])
def test_composite_hostname_port_rejects(value):
    rejects("hostname|port", value)


def test_composite_filename_hash_lowercases_hash_and_keeps_filename():
    # AttributeValidationToolTest::testFilenameHashLowercase
    value = "CMD.EXE|0CC175B9C0F1B6A831C399E269772661"
    assert normalise("filename|md5", value) == ("CMD.EXE", "0cc175b9c0f1b6a831c399e269772661")


@pytest.mark.parametrize("type_,value", [
    ("filename|md5", f"a|b|{MD5}"), ("filename|md5", MD5), ("regkey|value", "HKLM\\x"),
    ("filename|sha256", f"a.exe||{SHA256}"), ("malware-sample", "sample.exe"),
])
def test_composite_requires_exactly_one_pipe(type_, value):
    assert "'|'" in rejects(type_, value)


@pytest.mark.parametrize("type_,value", [
    ("filename|md5", f"|{MD5}"), ("filename|md5", "a.exe|"), ("regkey|value", " | "),
    ("malware-sample", f"  |{MD5}"),
])
def test_composite_rejects_empty_half(type_, value):
    assert "non-empty" in rejects(type_, value)


def test_composite_error_names_the_composite_type():
    message = rejects("filename|sha256", f"a.exe|{MD5}")
    assert "filename|sha256" in message and "64 hexadecimal" in message


def test_composite_filename_rejects_new_line():
    # AttributeValidationToolTest::testValidateFilename
    rejects("filename|md5", f"cmd.exe\ncmd.com|{MD5}")


def test_malware_sample_is_filename_and_md5():
    assert normalise("malware-sample", f"x.zip|{MD5.upper()}") == ("x.zip", MD5)


# --- domains, hostnames -----------------------------------------------------------------------

@pytest.mark.parametrize("type_", ["domain", "hostname"])
@pytest.mark.parametrize("value,expected", [
    ("EXAMPLE.COM", "example.com"),
    ("example.com.", "example.com"),
    ("Sub.Example.CO.UK.", "sub.example.co.uk"),
    ("_dmarc.example.com", "_dmarc.example.com"),
])
def test_domain_is_lowercased_and_trailing_dot_removed(type_, value, expected):
    assert normalise(type_, value) == (expected,)


@pytest.mark.parametrize("type_", ["domain", "hostname"])
@pytest.mark.parametrize("value", ["evil[.]com", "evil(.)com", "evil{.}com", "evil[dot]com",
                                   "evil(dot)com", "evil[DOT]com", "evil[[.]]com"])
def test_domain_is_refanged(type_, value):
    assert normalise(type_, value) == ("evil.com",)


@pytest.mark.parametrize("value", ["h\u00e1\u010dky\u010d\u00e1rky.cz", "H\u00c1\u010cKY\u010c\u00c1RKY.CZ"])
def test_domain_idn_is_punycoded(value):
    # AttributeValidationToolTest::testDomainModify
    assert normalise("domain", value) == ("xn--hkyrky-ptac70bc.cz",)


@pytest.mark.parametrize("type_", ["domain", "hostname"])
@pytest.mark.parametrize("value", ["localhost", "example.c", "exa mple.com", "http://example.com",
                                   "example.com/path", "example.com:80", "-.-", "example._om"])
def test_domain_rejects_non_domain(type_, value):
    assert type_ in rejects(type_, value)


def test_hostname_is_not_punycoded():
    # MISP punycodes a domain, not a hostname
    rejects("hostname", "h\u00e1\u010dky.cz")


def test_kelvin_sign_is_k_in_a_domain_only():
    # IDNA maps U+212A KELVIN SIGN to "k" (as MISP's idn_to_ascii does); a hostname must be ASCII
    assert normalise("domain", "\u212a.com") == ("k.com",)
    rejects("hostname", "\u212a.com")


@pytest.mark.parametrize("value,expected", [
    ("expyuzz4wqqyqhjn.onion", "expyuzz4wqqyqhjn.onion"),
    ("EXPYUZZ4WQQYQHJN.ONION", "expyuzz4wqqyqhjn.onion"),
    ("a" * 56 + ".onion", "a" * 56 + ".onion"),
])
def test_onion_address_v2_and_v3(value, expected):
    assert normalise("onion-address", value) == (expected,)


@pytest.mark.parametrize("value", ["a" * 17 + ".onion", "a" * 16 + ".com", "1" * 16 + ".onion",
                                   "x.expyuzz4wqqyqhjn.onion"])
def test_onion_address_rejects(value):
    rejects("onion-address", value)


# --- URLs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("hxxp://evil[.]com/a", "http://evil.com/a"),
    ("hxxps://evil[.]com/a", "https://evil.com/a"),
    ("HXXPS://evil.com", "https://evil.com"),
    ("hxtp://evil.com", "http://evil.com"),
    ("h[tt]p://evil.com", "http://evil.com"),
    ("hxxp[://]evil.com", "http://evil.com"),
    ("https[:]//evil.com", "https://evil.com"),
    ("[hxxp://]evil.com", "http://evil.com"),
    ("http://evil(.)com/x{.}php", "http://evil.com/x.php"),
    ("http://evil[dot]com", "http://evil.com"),
    ("meow://evil.com", "http://evil.com"),
    ("hxxp://evil[[.]]com", "http://evil.com"),
])
def test_url_is_refanged(value, expected):
    assert normalise("url", value) == (expected,)


def test_meow_without_colon_is_not_a_scheme():
    assert normalise("url", "meowcats.com/x") == ("meowcats.com/x",)


@pytest.mark.parametrize("type_", ["url", "uri", "link"])
@pytest.mark.parametrize("value,expected", [
    ("HTTPS://WWW.Example.COM/Path/File.PHP?Q=A#Frag", "https://www.example.com/Path/File.PHP?Q=A#Frag"),
    ("http://User:PassWord@Example.COM:8080/X", "http://User:PassWord@example.com:8080/X"),
    ("https://[2001:DB8::1]/X", "https://[2001:db8::1]/X"),
])
def test_url_scheme_and_host_are_lowercased_path_kept(type_, value, expected):
    assert normalise(type_, value) == (expected,)


@pytest.mark.parametrize("value,expected", [
    ("Evil.COM/Path", "evil.com/Path"),
    ("Evil.COM:8080/Path?A=B", "evil.com:8080/Path?A=B"),
    ("/Admin/Login.php", "/Admin/Login.php"),
    ("Not A Host/X", "Not A Host/X"),
])
def test_scheme_less_url_host_is_lowercased(value, expected):
    assert normalise("url", value) == (expected,)


def test_uri_without_scheme_is_kept():
    assert normalise("uri", "Evil.COM/Path") == ("Evil.COM/Path",)


@pytest.mark.parametrize("type_", ["url", "uri"])
def test_url_rejects_new_line(type_):
    assert "new line" in rejects(type_, "http://a.com/\nx")


@pytest.mark.parametrize("value", ["mailto:someone@example.com", "file:///etc/passwd",
                                   "ftp://ftp.example.com/pub", "https://example.com",
                                   "http://1.2.3.4:8080/x", "hxxp://evil[.]com/"])
def test_link_accepts_absolute_urls(value):
    normalise("link", value)


@pytest.mark.parametrize("value", ["example.com/path", "http://", "http:example.com",
                                   "https://exa mple.com", "https://ex_ample.com/",
                                   "https://\u00e9xample.com", "//example.com", "ftp:x"])
def test_link_requires_scheme_and_host(value):
    assert "link" in rejects("link", value)


# --- e-mail -----------------------------------------------------------------------------------

@pytest.mark.parametrize("type_", ["email", "email-src", "email-dst", "target-email",
                                   "whois-registrant-email"])
@pytest.mark.parametrize("value,expected", [
    ("Alice@Example.COM", "alice@example.com"),
    ("alice[at]example[.]com", "alice@example.com"),
    ("alice[@]example[dot]com", "alice@example.com"),
])
def test_email_is_lowercased_and_refanged(type_, value, expected):
    assert normalise(type_, value) == (expected,)


@pytest.mark.parametrize("type_", ["eppn", "dns-soa-email", "jabber-id"])
def test_other_email_types_keep_case(type_):
    assert normalise(type_, "Alice@Example.com") == ("Alice@Example.com",)


@pytest.mark.parametrize("type_", ["email", "eppn", "jabber-id"])
@pytest.mark.parametrize("value", ["alice", "alice@example", "@example.com", "al ice@example.com",
                                   "alice@exa\nmple.com"])
def test_email_rejects_non_address(type_, value):
    assert type_ in rejects(type_, value)


def test_email_check_is_as_loose_as_misp():
    # "^.[^\s]*@.*\..*$": anything with an '@' after the first character and a dot after it
    assert normalise("email", "a@b c.d") == ("a@b c.d",)


# --- numbers, identifiers, dates --------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("AS1234", "1234"), ("as1234", "1234"), ("As1234", "1234"), ("1234", "1234"), ("0", "0"),
    ("AS01234", "1234"), ("1.10", "65546"), ("AS1.10", "65546"), ("4294967295", "4294967295"),
])
def test_as_number_forms(value, expected):
    assert normalise("AS", value) == (expected,)


@pytest.mark.parametrize("value", ["1.2.3.4", "AS", "4294967296", "AS 1234", "ASN1234", "-1",
                                   "1.70000", "AS1234x"])
def test_as_number_rejects(value):
    assert "AS" in rejects("AS", value)


@pytest.mark.parametrize("value,expected", [
    ("2024-05-01T13:45:00Z", "2024-05-01T13:45:00.000000+0000"),
    ("2024-05-01T13:45:00+02:00", "2024-05-01T11:45:00.000000+0000"),
    ("2024-05-01T13:45:00.123456+0000", "2024-05-01T13:45:00.123456+0000"),
    ("2024-05-01 13:45", "2024-05-01T13:45:00.000000+0000"),
    ("2024-05-01", "2024-05-01T00:00:00.000000+0000"),
    ("20240501T134500Z", "2024-05-01T13:45:00.000000+0000"),
])
def test_datetime_is_iso8601_in_utc(value, expected):
    assert normalise("datetime", value) == (expected,)


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-05-01T25:00", "1714570000",
                                   "9999-12-31T23:59:59-01:00", "01/05/2024"])
def test_datetime_rejects_non_iso8601(value):
    assert "ISO 8601" in rejects("datetime", value)


@pytest.mark.parametrize("value,expected", [("true", "1"), ("TRUE", "1"), ("1", "1"),
                                            ("false", "0"), ("False", "0"), ("0", "0")])
def test_boolean_is_1_or_0(value, expected):
    assert normalise("boolean", value) == (expected,)


@pytest.mark.parametrize("value", ["yes", "2", "-1", "truee"])
def test_boolean_rejects_other_words(value):
    rejects("boolean", value)


@pytest.mark.parametrize("type_", ["counter", "size-in-bytes"])
def test_counter_is_a_whole_number(type_):
    assert normalise(type_, "0") == ("0",)
    assert normalise(type_, "00120") == ("120",)
    assert normalise(type_, "9" * 5000) == ("9" * 5000,)
    for bad in ("-1", "1.5", "1e3", "\u0661"):
        rejects(type_, bad)


@pytest.mark.parametrize("value,expected", [("42", "42"), ("-42", "-42"), ("+42", "42"),
                                            ("-0", "0"), ("007", "7")])
def test_integer_is_canonical(value, expected):
    assert normalise("integer", value) == (expected,)


@pytest.mark.parametrize("value", ["1.0", "1e3", "0x10", "--1", ""])
def test_integer_rejects_non_integers(value):
    rejects("integer", value)


@pytest.mark.parametrize("type_", ["float", "bank-account-nr", "aba-rtn"])
@pytest.mark.parametrize("value", ["1", "-1.5", "+.5", "5.", "1e10", "1.5E-3"])
def test_float_accepts_php_numeric(type_, value):
    assert normalise(type_, value) == (value,)


@pytest.mark.parametrize("type_", ["float", "bank-account-nr", "aba-rtn"])
@pytest.mark.parametrize("value", ["abc", "1,5", "0x1A", "nan", "inf", "1e", ".", "1 2"])
def test_float_rejects_non_numeric(type_, value):
    rejects(type_, value)


@pytest.mark.parametrize("type_,value,expected", [
    ("mac-address", "AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
    ("mac-address", "aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff"),
    ("mac-address", "aa bb cc dd ee ff", "aa:bb:cc:dd:ee:ff"),
    ("mac-eui-64", "00-11-22-33-44-55-66-77", "00:11:22:33:44:55:66:77"),
])
def test_mac_address_is_lowercase_colon_separated(type_, value, expected):
    assert normalise(type_, value) == (expected,)


@pytest.mark.parametrize("type_,value", [("mac-address", "aa:bb:cc:dd:ee"),
                                         ("mac-address", "aa:bb:cc:dd:ee:gg"),
                                         ("mac-address", "00:11:22:33:44:55:66:77"),
                                         ("mac-eui-64", "aa:bb:cc:dd:ee:ff")])
def test_mac_address_rejects_wrong_length(type_, value):
    rejects(type_, value)


def test_vulnerability_is_uppercased_and_en_dash_replaced():
    assert normalise("vulnerability", "cve\u20132021\u201344228") == ("CVE-2021-44228",)
    for bad in ("CVE-21-1234", "CVE-2021-123", "GHSA-xxxx-xxxx-xxxx", "CVE-2021-44228 x"):
        rejects("vulnerability", bad)


def test_weakness_is_cwe():
    assert normalise("weakness", "Cwe-79") == ("CWE-79",)
    rejects("weakness", "CWE-")


@pytest.mark.parametrize("type_", ["phone-number", "prtn", "whois-registrant-phone"])
@pytest.mark.parametrize("value,expected", [
    ("+41 22 730 11 11", "+41227301111"), ("0041 (0)22 730 11 11", "+41227301111"),
    ("555-0100", "5550100"),
])
def test_phone_number_keeps_plus_and_digits(type_, value, expected):
    assert normalise(type_, value) == (expected,)


@pytest.mark.parametrize("value", ["call me", "+", "12+34"])
def test_phone_number_rejects(value):
    rejects("phone-number", value)


@pytest.mark.parametrize("type_", ["cc-number", "bin"])
def test_card_number_keeps_digits(type_):
    assert normalise(type_, "4111-1111 1111.1111") == ("4111111111111111",)
    rejects(type_, "----")


@pytest.mark.parametrize("type_", ["iban", "bic"])
def test_bank_codes_are_uppercase_alphanumeric(type_):
    assert normalise(type_, "gb82 west-1234") == ("GB82WEST1234",)
    rejects(type_, "- -")


@pytest.mark.parametrize("type_", ["btc", "dash", "xmr"])
def test_wallets_are_alphanumeric_case_kept(type_):
    assert normalise(type_, "AbC123") == ("AbC123",)
    rejects(type_, "abc-123")


def test_http_method_is_uppercased():
    assert normalise("http-method", "get") == ("GET",)
    rejects("http-method", "FOO")


def test_hex_is_uppercased():
    assert normalise("hex", "0a1B") == ("0A1B",)
    rejects("hex", "0x1B")


@pytest.mark.parametrize("type_", ["windows-service-name", "windows-service-displayname"])
def test_windows_service_name_has_no_slashes_and_256_bytes(type_):
    assert normalise(type_, "a" * 256) == ("a" * 256,)
    for bad in ("a" * 257, "a/b", "a\\b"):
        assert "256" in rejects(type_, bad)


def test_cortex_is_json():
    assert normalise("cortex", "[1, 2]") == ("[1, 2]",)
    for bad in ("{", "NaN", "[Infinity]", "{'a': 1}", "[" * 100_000):
        rejects("cortex", bad)


def test_uuid_is_lowercased():
    assert normalise("uuid", "5C0F1E5A-8C2D-4F6B-9E3A-1B2C3D4E5F60") == (
        "5c0f1e5a-8c2d-4f6b-9e3a-1b2c3d4e5f60",)
    rejects("uuid", "5c0f1e5a8c2d4f6b9e3a1b2c3d4e5f60")


def test_anonymised_is_lowercased():
    assert normalise("anonymised", "Foo\nBAR") == ("foo\nbar",)


# --- free text --------------------------------------------------------------------------------

@pytest.mark.parametrize("type_", sorted(SINGLE_LINE | MULTI_LINE))
def test_free_text_types_accept_any_text(type_):
    value = "Any t\u00ebxt | with: [.] / \\ symbols \U0001f600 and CASE"
    assert normalise(type_, value) == (value,)


@pytest.mark.parametrize("type_", sorted(SINGLE_LINE) + ["url", "uri", "regkey|value"])
def test_single_line_types_reject_new_line(type_):
    value = "a|b\nc" if "|" in type_ else "first\nsecond"
    assert "new line" in rejects(type_, value)


@pytest.mark.parametrize("type_", sorted(MULTI_LINE))
def test_multi_line_types_keep_new_lines(type_):
    value = "rule x {\n  condition: true\r\n}"
    assert normalise(type_, value) == (value,)


@pytest.mark.parametrize("type_", sorted(SINGLE_LINE | MULTI_LINE) + ["filename|md5"])
def test_only_control_characters_are_rejected(type_):
    value = f"\x01\x02\x7f|{MD5}" if "|" in type_ else "\x01\x02\x7f"
    assert "control" in rejects(type_, value)


def test_filename_case_is_kept():
    assert normalise("filename", "Invoice.PDF.exe") == ("Invoice.PDF.exe",)


# --- properties -------------------------------------------------------------------------------

def _hex_of(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdefABCDEF", min_size=n, max_size=n)


hash_values = st.sampled_from(HASH_TYPES).flatmap(
    lambda t: st.tuples(st.just(t), _hex_of(HEX_LENGTHS[t])))


@given(hash_values)
def test_hash_normalise_is_idempotent(type_value):
    type_, value = type_value
    (key,) = normalise(type_, value)
    assert key == value.lower()
    assert normalise(type_, key) == (key,)


def _recase(draw, s: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in s)


@st.composite
def ip_values(draw) -> str:
    address = draw(st.ip_addresses())
    text = address.exploded if draw(st.booleans()) else str(address)
    text = _recase(draw, text)
    if draw(st.booleans()):
        text += f"/{draw(st.integers(0, address.max_prefixlen))}"
    return text


@given(st.sampled_from(IP_TYPES), ip_values())
def test_ip_normalise_is_idempotent(type_, value):
    (key,) = normalise(type_, value)
    assert normalise(type_, key) == (key,)


@st.composite
def fanged(draw, strategy) -> str:
    text = draw(strategy)
    fang = draw(st.sampled_from([".", "[.]", "(.)", "{.}", "[dot]"]))
    return text.replace(".", fang) if draw(st.booleans()) else text


@given(st.sampled_from(["domain", "hostname"]), fanged(domains()))
def test_domain_normalise_is_idempotent(type_, value):
    (key,) = normalise(type_, value)
    assert key == key.lower() and not key.endswith(".")
    assert normalise(type_, key) == (key,)


@given(st.sampled_from(["url", "uri", "link"]), fanged(urls()))
def test_url_normalise_is_idempotent(type_, value):
    (key,) = normalise(type_, value)
    assert normalise(type_, key) == (key,)


# Text that reaches the parsers' corners: separators, defanged tokens, digits, hex, brackets.
_TOKENS = ["|", ":", "::", ".", "/", "@", "[.]", "(dot)", "[at]", "[:]", "[://]", "hxxp", "http://",
           " port ", "p", "#", "[", "]", "0", "1", "32", "128", "255", "65535", "ffff", "a", "F",
           "as", "t1", "-", "_", " ", "\n", "\x00", "\x01", "\u00e9", "\u212a", "xn--", ".onion",
           "T", "Z", "+02:00", "2024-05-01", "{", "}", '"', "e5", "SHA256:", "MD5:", "=", "\ud800"]
tokens = st.lists(st.sampled_from(_TOKENS), max_size=12).map("".join)
any_text = st.text(st.characters(exclude_categories=()), max_size=80)  # surrogates included
type_names = st.sampled_from(DESCRIBE_TYPES)


def _check_outcome(type_: str, value: str) -> None:
    try:
        keys = normalise(type_, value)
    except ValueFormatError as e:
        message = str(e)
        assert message and type_ in message
        return
    assert isinstance(keys, tuple) and keys and all(isinstance(k, str) and k for k in keys)
    # normalising the keys again (joined back for a composite) gives the same keys
    assert normalise(type_, "|".join(keys)) == keys


@settings(max_examples=1_000)
@given(type_names, tokens)
def test_any_token_soup_gives_keys_or_value_format_error(type_, value):
    _check_outcome(type_, value)


@settings(max_examples=500)
@given(type_names, any_text)
def test_any_str_never_raises_anything_but_value_format_error(type_, value):
    _check_outcome(type_, value)


@given(st.one_of(st.text(max_size=20), st.none(), st.integers()), st.text(max_size=20))
def test_any_type_name_never_raises_anything_but_value_format_error(type_, value):
    try:
        normalise(type_, value)  # type: ignore[arg-type]
    except ValueFormatError as e:
        message = str(e)
        assert message and (repr(type_) in message or (isinstance(type_, str) and type_ in message))
