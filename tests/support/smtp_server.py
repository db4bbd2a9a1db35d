#!/usr/bin/python3
"""A real SMTP server on loopback for the mail tests (aiosmtpd, Debian's python3-aiosmtpd).

usage: smtp_server.py PORT DIR

Every message it accepts is written to DIR/inbox/<n>.eml exactly as received. How it answers
the next transaction is read from DIR/mode at the DATA command, one word:
  accept      250, message stored (the default)
  tempfail    451 at DATA, nothing stored
  permfail    550 at DATA, nothing stored
  disconnect  after the first line of the message the connection is closed, nothing stored
  hang        the message is stored and no answer is ever given (the sender, waiting,
              is killed by the test: a crash between sending and recording)
When it is listening it writes DIR/ready.
"""
import asyncio
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

PORT, DIR = int(sys.argv[1]), sys.argv[2]
INBOX = os.path.join(DIR, "inbox")
os.makedirs(INBOX, exist_ok=True)


def mode():
    try:
        with open(os.path.join(DIR, "mode")) as f:
            return f.read().strip() or "accept"
    except FileNotFoundError:
        return "accept"


def store(envelope):
    n = len(os.listdir(INBOX)) + 1
    path = os.path.join(INBOX, "%06d.eml" % n)
    with open(path + ".part", "wb") as f:
        f.write(envelope.original_content or envelope.content)
    os.rename(path + ".part", path)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        now = mode()
        if now == "tempfail":
            return "451 4.3.0 try again later"
        if now == "permfail":
            return "550 5.1.1 no such mailbox"
        store(envelope)
        if now == "hang":
            await asyncio.sleep(3600)
        return "250 OK"


class Smtp(SMTP):
    async def smtp_DATA(self, arg):
        if mode() != "disconnect" or not self.envelope.rcpt_tos:
            return await super().smtp_DATA(arg)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await self._reader.readline()
        self.transport.close()


class Server(Controller):
    def factory(self):
        return Smtp(self.handler, decode_data=False, enable_SMTPUTF8=True)


controller = Server(Handler(), hostname="127.0.0.1", port=PORT)
controller.start()
with open(os.path.join(DIR, "ready"), "w") as f:
    f.write("ready\n")
try:
    asyncio.new_event_loop().run_forever()
except KeyboardInterrupt:
    pass
finally:
    controller.stop()
