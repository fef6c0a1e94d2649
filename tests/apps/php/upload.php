<?php
$f = $_FILES['f'] ?? null;
if (!$f || $f['error'] !== UPLOAD_ERR_OK) {
    http_response_code(400);
    echo "upload error ", $f ? $f['error'] : 'none', "\n";
    exit;
}
echo hash_file('sha256', $f['tmp_name']), ' ', $f['size'], ' ', $f['name'], ' ', $_POST['note'] ?? '', "\n";
