# A pymilter milter for the milter test: it tempfails a recipient, rejects or quarantines a message by
# its subject, and otherwise makes every change a milter can (header, recipients, sender, body).
import Milter, sys
class T(Milter.Base):
    def __init__(self):
        self.subject = ''
    def envrcpt(self, to, *a):
        if 'tempfail' in to:
            self.setreply('451', '4.7.1', 'milter is busy')
            return Milter.TEMPFAIL
        return Milter.CONTINUE
    def header(self, name, val):
        if name.lower() == 'subject':
            self.subject = val
        return Milter.CONTINUE
    def eom(self):
        if self.subject == 'reject me':
            self.setreply('550', '5.7.1', 'milter says no')
            return Milter.REJECT
        if self.subject == 'quarantine me':
            self.quarantine('looks suspicious')
            return Milter.ACCEPT
        self.addheader('X-Milter', 'seen')
        self.chgheader('Subject', 1, '[milter] ' + self.subject)
        self.addrcpt('<extra@remote.example>')
        self.delrcpt('<gone@remote.example>')
        self.chgfrom('<changed@remote.example>')
        self.replacebody(b'replaced body\r\n')
        return Milter.ACCEPT
Milter.factory = T
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.DELRCPT | Milter.CHGBODY | Milter.QUARANTINE | Milter.CHGFROM)
Milter.runmilter('t', 'inet:%s@127.0.0.1' % sys.argv[1], 60)
