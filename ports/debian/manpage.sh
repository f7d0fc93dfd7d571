#!/usr/bin/env bash
# Writes ember(1) in roff to stdout, from the help the binary itself prints
# (`ember --help`, `ember serve --help`, and each command's), so the page
# names exactly the commands and flags of the build it ships with.
# Usage: manpage.sh path/to/ember
set -euo pipefail
bin=$1
version=$("$bin" version 2>/dev/null | head -n1 || true)

# Help text as a no-fill block: backslashes and leading dots escaped.
block() {
    printf '.nf\n'
    sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\&'/"
    printf '.fi\n'
}

cat <<ROFF
.TH EMBER 1 "" "${version:-ember}" "User Commands"
.SH NAME
ember \- a small etcd for edge clusters: server and client
.SH SYNOPSIS
.B ember serve
[\fIflags\fR]
.br
.B ember
\fIcommand\fR [\fIflags\fR] [\fIarguments\fR]
.SH DESCRIPTION
ROFF
"$bin" --help 2>&1 | block
printf '.SH SERVE\n'
"$bin" serve --help 2>&1 | block
printf '.SH ENVIRONMENT\n'
printf 'Every flag of \\fBember serve\\fR may also come from \\fBEMBER_<FLAG>\\fR (upper case, dashes as underscores); the packaged service reads them from \\fI/etc/default/ember\\fR.\n'
printf '.SH FILES\n.TP\n.I /etc/default/ember\nsettings of the service\n.TP\n.I /var/lib/ember\ndata directory of the service\n'
printf '.SH SEE ALSO\n.BR systemctl (1),\n.BR journalctl (1)\n'
