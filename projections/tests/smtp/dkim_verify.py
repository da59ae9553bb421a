"""Verifies a message's DKIM signature (dkimpy) against a public key given on the command line
instead of DNS. Usage: python3 dkim_verify.py MESSAGE_FILE PUBLIC_KEY_BASE64_DER
Prints the signed header names (h=) and exits 0 when the signature verifies, 1 otherwise."""

import sys

import dkim


def main():
    message = open(sys.argv[1], "rb").read()
    record = b"v=DKIM1; k=rsa; p=" + sys.argv[2].encode()
    ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
    signature = dkim.DKIM(message)
    sig = [v for k, v in signature.headers if k.lower() == b"dkim-signature"]
    tags = dict(
        part.strip().split(b"=", 1) for part in b"".join(sig[0].split()).split(b";") if b"=" in part
    ) if sig else {}
    print(tags.get(b"h", b"").decode())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
