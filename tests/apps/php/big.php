<?php
// ?mb=N: N MiB of a known pattern, streamed with flush() every 64 KiB.
$mb = (int)($_GET['mb'] ?? 10);
$block = '';
for ($i = 0; $i < 65536; $i++) {
    $block .= chr($i % 251);
}
header('Content-Type: application/octet-stream');
for ($i = 0; $i < $mb * 16; $i++) {
    echo $block;
    flush();
}
