<?php
// mod_procd's guard for php-cgi, shipped inside mod_procd.so, written to
// RUNTIME/loaders/ by the manager and run before every script as php-cgi's
// auto_prepend_file. php-cgi runs whatever SCRIPT_FILENAME its FastCGI
// client names; this runs only what Apache maps to the group: the group's
// app= (a front controller), or a file with one of the extensions its
// LanguageHandler directives map, under the directories where they are
// written (the DocumentRoot for one outside a <Directory>), checked on the
// resolved name. The lists come from `-d procd.guard=...` (a php-cgi
// argument, hex-encoded: app, extensions, roots), never from the request:
// a FastCGI client can set any environment variable, not a -d setting.
(static function (): void {
    // Apache sends a request whole and answers 503 when no worker has read
    // it by queue-timeout: a request read that late was answered already,
    // and is not run (PROCD_QUEUED_AT_MS: when Apache began to queue it).
    $queued = (string)getenv('PROCD_QUEUED_AT_MS');
    $limit = (string)getenv('PROCD_QUEUE_TIMEOUT_MS');
    if ($queued !== '' && $limit !== '' && (string)(int)$queued === $queued && (string)(int)$limit === $limit) {
        $waited = (int)(microtime(true) * 1000) - (int)$queued;
        if ($waited >= (int)$limit - 5) {
            @file_put_contents('php://stderr', "mod_procd: request dropped unrun: it waited $waited ms in the queue,"
                . " longer than queue-timeout ($limit ms): Apache answered 503\n");
            exit;
        }
    }
    $guard = explode('.', (string)get_cfg_var('procd.guard'));
    $field = static fn (int $i): string => (string)@hex2bin($guard[$i] ?? '');
    // getenv() reads php-cgi's FastCGI parameters (after its own
    // cgi.fix_pathinfo correction, the file it will run) without building
    // $_SERVER: touching $_SERVER here made PHP register every variable on
    // every request, a quarter of php-cgi's time for a small script.
    $file = (string)getenv('SCRIPT_FILENAME');
    $real = $file === '' ? false : realpath($file);
    $ok = false;
    if ($real !== false) {
        $app = $field(0);
        if ($app !== '' && realpath($app) === $real) {
            $ok = true;
        } else {
            $lower = strtolower($real);
            $mapped = false;
            foreach (explode(' ', $field(1)) as $ext) {
                if ($ext !== '' && str_ends_with($lower, $ext)) {
                    $mapped = true;
                }
            }
            foreach ($mapped ? explode("\n", $field(2)) : [] as $root) {
                $r = $root === '' ? false : realpath($root);
                if ($r !== false && ($r === '/' || str_starts_with($real, $r . '/'))) {
                    $ok = true;
                    break;
                }
            }
        }
    }
    if (!$ok) {
        http_response_code(403);
        // To php-cgi's own stderr: the manager writes it to the group's
        // log (the FastCGI client, whoever it is, does not get to see it).
        @file_put_contents('php://stderr', 'mod_procd: refused to run ' . addcslashes($file, "\0..\37\\\177..\377")
            . ': it is not this group\'s app= nor a file its LanguageHandler directives map'
            . " (their extensions, under their directories, links resolved)\n");
        exit;
    }
})();
