#!/usr/bin/perl
# The mutant catalogue (mutate/mutants.txt), for mutate/run.sh:
#
#   catalogue.pl list CATALOGUE             one line per mutant:
#                                           id TAB file TAB tests
#   catalogue.pl promise CATALOGUE ID       the promise it breaks
#   catalogue.pl apply CATALOGUE ID TREE    the edit, made in TREE/file;
#                                           exit 3: the search text does
#                                           not occur exactly once there
#   catalogue.pl check CATALOGUE TREE       every mutant applies to TREE
#                                           (nothing is written)
#
# A malformed catalogue (a field missing, an id twice, a test file that
# does not exist) is an error: exit 2, saying where.

use strict;
use warnings;

my ($cmd, $file, @args) = @ARGV;

die "usage: $0 list|promise|apply|check CATALOGUE [ID] [TREE]\n"
    unless $cmd && $file;

my @mutants = read_catalogue($file);
my %by_id = map { $_->{id} => $_ } @mutants;

if ($cmd eq 'list') {
    print join("\t", $_->{id}, $_->{file}, $_->{tests}), "\n" for @mutants;

} elsif ($cmd eq 'promise') {
    my $m = $by_id{ $args[0] // '' } or die "no mutant \"$args[0]\"\n";
    print "$m->{promise}\n";

} elsif ($cmd eq 'apply') {
    my ($id, $tree) = @args;
    my $m = $by_id{ $id // '' } or die "no mutant \"" . ($id // '') . "\"\n";
    exit apply($m, $tree, 1);

} elsif ($cmd eq 'check') {
    my ($tree) = @args;
    my $bad = 0;

    for my $m (@mutants) {
        $bad++ if apply($m, $tree, 0);
    }

    print scalar(@mutants) . " mutants, $bad do not apply\n";
    exit($bad ? 3 : 0);

} else {
    die "unknown command \"$cmd\"\n";
}


# the edit: the search text must occur exactly once in the file, so that
# the catalogue is kept in step with the code

sub apply {
    my ($m, $tree, $write) = @_;

    my $path = "$tree/$m->{file}";

    open my $fh, '<', $path or do {
        print STDERR "$m->{id}: cannot read $m->{file}: $!\n";
        return 3;
    };
    local $/;
    my $text = <$fh>;
    close $fh;

    my $n = () = $text =~ /\Q$m->{search}\E/g;

    if ($n != 1) {
        print STDERR "$m->{id}: the search text occurs $n times in "
                     . "$m->{file}, not once\n";
        return 3;
    }

    return 0 unless $write;

    $text =~ s/\Q$m->{search}\E/$m->{replace}/;

    open $fh, '>', $path or die "cannot write $path: $!\n";
    print $fh $text;
    close $fh;

    return 0;
}


# === id
# promise: ...            (may go on, indented, on the next lines)
# file: src/...
# tests: t/NNN-x.t ...    (in the order to run them; "unit": t/unit)
# --- search
# exact text, whole lines
# --- replace
# its replacement (none: the lines are removed)
# --- end

sub read_catalogue {
    my ($path) = @_;

    open my $fh, '<', $path or die "cannot read $path: $!\n";

    my (@out, $m, $block, %seen);
    my $line = 0;

    my $fail = sub { print STDERR "$path:$line: $_[0]\n"; exit 2 };

    while (my $l = <$fh>) {
        $line++;
        chomp $l;

        if (defined $block) {
            if ($l eq '--- replace' && $block eq 'search') {
                $block = 'replace';
                $m->{replace} = '';
            } elsif ($l eq '--- end') {
                $block = undef;
                push @out, $m;
            } elsif ($l =~ /^--- /) {
                $fail->("\"$l\" inside the $block text");
            } else {
                $m->{$block} .= "$l\n";
            }
            next;
        }

        next if $l =~ /^\s*(?:#|$)/;

        if ($l =~ /^=== (\S+)$/) {
            $fail->("mutant \"$1\" given twice") if $seen{$1}++;
            $m = { id => $1, line => $line };

        } elsif (!$m) {
            $fail->('a mutant starts with "=== id"');

        } elsif ($l =~ /^(promise|file|tests):\s*(.*)$/) {
            $m->{$1} = $2;
            $m->{last} = $1;

        } elsif ($l =~ /^\s+(\S.*)$/ && ($m->{last} // '') eq 'promise') {
            $m->{promise} .= " $1";

        } elsif ($l eq '--- search') {
            for my $k (qw(promise file tests)) {
                $fail->("mutant \"$m->{id}\" has no \"$k:\"")
                    unless $m->{$k};
            }
            for my $t (split ' ', $m->{tests}) {
                next if $t eq 'unit';
                $fail->("mutant \"$m->{id}\": no test file $t")
                    unless -f $t;
            }
            $block = 'search';
            $m->{search} = '';

        } else {
            $fail->("cannot read \"$l\"");
        }
    }

    $fail->("the last mutant has no \"--- end\"") if defined $block;

    for (@out) {
        $fail->("mutant \"$_->{id}\": empty search text")
            unless length $_->{search};
        $fail->("mutant \"$_->{id}\": the replacement is the search text")
            if $_->{search} eq $_->{replace};
    }

    return @out;
}
