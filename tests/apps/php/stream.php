<?php
// php.ini's output_buffering holds output back; flush() then passes what
// PHP has to Apache, which passes it to the client at once.
while (ob_get_level()) {
    ob_end_flush();
}
echo "first\n";
flush();
sleep(2);
echo "second\n";
