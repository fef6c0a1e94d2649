<?php
// ?ms=N: sleep N milliseconds; ?mark=FILE: touch FILE first (proves it
// ran); ?pidfile=FILE: write its pid there first.
if (isset($_GET['pidfile'])) {
    file_put_contents($_GET['pidfile'], getmypid());
}
if (isset($_GET['mark'])) {
    touch($_GET['mark']);
}
$ms = (int)($_GET['ms'] ?? 1000);
$end = microtime(true) + $ms / 1000;
while (($left = $end - microtime(true)) > 0) {
    usleep((int)min($left * 1e6, 200000));
}
echo "slept $ms pid ", getmypid(), "\n";
