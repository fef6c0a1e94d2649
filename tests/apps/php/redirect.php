<?php
$to = $_GET['to'] ?? '';
if ($to === 'external') {
    header('Location: http://example.org/elsewhere');
} elseif ($to === 'local') {
    // A CGI local redirect: Location with a local path and status 200.
    header('Location: /hello.txt', true, 200);
    echo "this body is discarded\n";
} elseif ($to === 'local-php') {
    header('Location: /env.php?from=redirect', true, 200);
}
