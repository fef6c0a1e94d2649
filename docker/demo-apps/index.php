<?php
// mod_procd demo: PHP through FastCGI, as user procd-demo-php.
session_start();
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
$name = htmlspecialchars($_POST['name'] ?? $_GET['name'] ?? 'world', ENT_QUOTES);
// The process's user (get_current_user() names the script file's owner).
$user = function_exists('posix_geteuid') ? (posix_getpwuid(posix_geteuid())['name'] ?? '?') : get_current_user();
?><!DOCTYPE html>
<html><head><title>PHP on mod_procd</title></head><body>
<h1>Hello, <?= $name ?>!</h1>
<p>PHP <?= PHP_VERSION ?> (<?= php_sapi_name() ?>), pid <?= getmypid() ?>, user <?= htmlspecialchars($user) ?>,
visits in this session: <?= (int)$_SESSION['visits'] ?>.</p>
<form method="post"><input name="name" placeholder="your name"> <button>Greet</button></form>
<form method="post" enctype="multipart/form-data"><input type="file" name="f"> <button>Upload</button></form>
<?php if (isset($_FILES['f']) && $_FILES['f']['error'] === UPLOAD_ERR_OK): ?>
<p>Uploaded <?= htmlspecialchars($_FILES['f']['name']) ?>: <?= (int)$_FILES['f']['size'] ?> bytes,
sha256 <?= hash_file('sha256', $_FILES['f']['tmp_name']) ?></p>
<?php endif; ?>
<p><a href="/">back</a></p>
</body></html>
