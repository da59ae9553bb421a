"""A real SMTP server for the delivery tests (aiosmtpd).

Usage: python3 server.py MAILDIR
Prints the port it listens on (127.0.0.1) on its first line, then serves until killed. Every
accepted message is written to MAILDIR as one file (its raw bytes, RCPT in the file name).
Recipients steer the answer, per address:
  refuse*@...  550 5.1.1 to RCPT (the recipient does not exist)
  busy*@...    451 4.3.0 to RCPT the first time, accepted after
  reject*@...  554 5.7.1 to DATA (the message is refused, not the recipient)
"""

import asyncio
import os
import socket
import sys
import uuid

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, maildir):
        self.maildir = maildir
        self.seen = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if local.startswith("busy"):
            self.seen[address] = self.seen.get(address, 0) + 1
            if self.seen[address] == 1:
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.split("@", 1)[0].lower().startswith("reject") for r in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        name = "%s-%s.eml" % (envelope.rcpt_tos[0], uuid.uuid4().hex)
        tmp = os.path.join(self.maildir, "." + name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.maildir, name))
        return "250 Message accepted for delivery"


def main():
    maildir = sys.argv[1]
    os.makedirs(maildir, exist_ok=True)
    if len(sys.argv) > 2:
        port = int(sys.argv[2])
    else:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
    controller = Controller(Handler(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
