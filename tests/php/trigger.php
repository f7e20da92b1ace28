<?php
// The unmodified PHP SDK (pusher/pusher-php-server, from $PUSHER_PHP_SDK) calling one method
// of Pusher\Pusher against the server named by PUSHER_HOST/PUSHER_PORT, the app by
// PUSHER_APP_ID/PUSHER_APP_KEY/PUSHER_APP_SECRET.
//
//   php trigger.php <method> <JSON array of arguments>
//
// Prints one JSON line: {"result": <what the method returned>}, or
// {"error": <message>, "status": <HTTP status or null>} with exit status 1.

declare(strict_types=1);

$sdk = getenv('PUSHER_PHP_SDK');
if ($sdk === false || $sdk === '') {
    fwrite(STDERR, "PUSHER_PHP_SDK is not set\n");
    exit(2);
}
// Debian's php-guzzlehttp-guzzle and php-psr-log; the SDK itself is loaded PSR-4 from src/.
require_once '/usr/share/php/GuzzleHttp/autoload.php';
require_once '/usr/share/php/Psr/Log/autoload.php';
spl_autoload_register(function (string $class) use ($sdk): void {
    if (str_starts_with($class, 'Pusher\\')) {
        $file = $sdk . '/src/' . str_replace('\\', '/', substr($class, strlen('Pusher\\'))) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

[, $method, $arguments] = $argv;
$pusher = new Pusher\Pusher(
    getenv('PUSHER_APP_KEY'),
    getenv('PUSHER_APP_SECRET'),
    getenv('PUSHER_APP_ID'),
    ['host' => getenv('PUSHER_HOST'), 'port' => (int) getenv('PUSHER_PORT'),
     'scheme' => 'http', 'useTLS' => false],
);
try {
    $result = $pusher->{$method}(...json_decode($arguments, true, 512, JSON_THROW_ON_ERROR));
    echo json_encode(['result' => $result], JSON_THROW_ON_ERROR), "\n";
} catch (Pusher\ApiErrorException $error) {
    echo json_encode(['error' => $error->getMessage(), 'status' => $error->getCode()]), "\n";
    exit(1);
}
