#!/usr/bin/perl
# Sisimai's answers for the bounce-accuracy bench (bench-bounces): one JSON line per file,
#   {"file": NAME, "records": [{"recipient", "alias", "reason", "softbounce", "action",
#    "status", "smtpagent", "feedbacktype"}]}
# Usage: perl bench/sisimai/reference.pl FILE...   (Debian: apt-get install libsisimai-perl)
use strict;
use warnings;
use File::Basename qw(basename);
use JSON::PP;
use Sisimai;

my $json = JSON::PP->new->canonical->utf8;
$| = 1;
for my $file (@ARGV) {
    my $records = [];
    my $parsed = eval { Sisimai->make($file, 'delivered' => 1, 'vacation' => 1) } || [];
    for my $r (@$parsed) {
        push @$records, {
            'recipient'    => $r->recipient ? $r->recipient->address : '',
            'alias'        => $r->alias // '',
            'reason'       => $r->reason // '',
            'softbounce'   => 0 + ($r->softbounce // -1),
            'action'       => $r->action // '',
            'status'       => $r->deliverystatus // '',
            'smtpagent'    => $r->smtpagent // '',
            'feedbacktype' => $r->feedbacktype // '',
        };
    }
    print $json->encode({ 'file' => basename($file), 'records' => $records }), "\n";
}
